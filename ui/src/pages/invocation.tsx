// One invocation (BuildBuddy's invocation page): summary, command line, targets grouped by status
// (failures first) with counts, and a selected target's test attempts and shards with their logs.
// While the invocation is still uploading, everything reloads every few seconds.
import { Code, ConnectError } from "@connectrpc/connect";
import { useEffect, useMemo, useState } from "preact/hooks";
import type { Action } from "../../../src/gen/google/devtools/resultstore/v2/action_pb.ts";
import { Status, UploadStatus } from "../../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import type { ConfiguredTarget } from "../../../src/gen/google/devtools/resultstore/v2/configured_target_pb.ts";
import type { File } from "../../../src/gen/google/devtools/resultstore/v2/file_pb.ts";
import type { Invocation } from "../../../src/gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { mask, resultFiles, resultStore } from "../api.ts";
import { concat } from "../blobs.ts";
import { ErrorBox, KeyValues, Pager, Show, StatusBadge, useLoad, usePage } from "../components/common.tsx";
import { FileLink, fileSize } from "../components/files.tsx";
import { LogView, type LogSource } from "../components/log-view.tsx";
import { RemoteActions } from "../components/remote-actions.tsx";
import { TestCases } from "../components/test-cases.tsx";
import { durationMs, ms, when } from "../format.ts";
import { Link } from "../router.tsx";

const REFRESH_MS = 3000;
const TARGET_PAGE = 100;
const INVOCATION_FIELDS = "name,id,status_attributes,timing,invocation_attributes,workspace_info,properties,files";
const CT_FIELDS = "configured_targets.name,configured_targets.id,configured_targets.status_attributes,configured_targets.timing,configured_targets.test_attributes,next_page_token";
const ACTION_FIELDS = "actions.name,actions.id,actions.status_attributes,actions.timing,actions.test_action,actions.build_action,actions.action_attributes,actions.files,next_page_token";

/** Failures first, then the unfinished, then the good. */
const ORDER = [Status.FAILED, Status.TIMED_OUT, Status.FLAKY, Status.FAILED_TO_BUILD, Status.TOOL_FAILED, Status.INCOMPLETE, Status.CANCELLED, Status.BUILDING, Status.TESTING, Status.UNKNOWN, Status.STATUS_UNSPECIFIED, Status.SKIPPED, Status.PASSED, Status.BUILT];
const rank = (s: Status) => (ORDER.indexOf(s) === -1 ? ORDER.length : ORDER.indexOf(s));
const enc = encodeURIComponent;

export function InvocationPage({ id, url }: { id: string; url: URL }) {
  const name = `invocations/${enc(id)}`;
  const [tick, setTick] = useState(0);
  const inv = useLoad((signal) => resultStore.getInvocation({ name }, { ...mask(INVOCATION_FIELDS), signal }), [name, tick]);
  const meta = useLoad((signal) => resultStore.getInvocationDownloadMetadata({ name: `${name}/downloadMetadata` }, { signal }), [name, tick]);
  const targets = useTargets(name, tick);
  // Bazel prints --bes_results_url as the build starts: the invocation may not exist yet.
  const notYet = meta.error instanceof ConnectError && meta.error.code === Code.NotFound;
  const live = notYet || (meta.data !== undefined && meta.data.uploadStatus === UploadStatus.UPLOADING);
  // The next round starts a while after this one's targets are all in (a round may take longer).
  const roundDone = targets.tick === tick && targets.done;
  useEffect(() => {
    if (!live || !roundDone) return;
    const t = setTimeout(() => setTick((n) => n + 1), REFRESH_MS);
    return () => clearTimeout(t);
  }, [live, roundDone, tick]);

  const selected = url.searchParams.get("target");
  return (
    <section>
      <h1>
        Invocation <code>{id}</code>
      </h1>
      {notYet ? (
        <p class="live">No such invocation yet: waiting for the build's first events (this page checks every few seconds).</p>
      ) : (
        <>
          {live && <p class="live">Still uploading: this page refreshes every few seconds.</p>}
          <Show loaded={inv}>{(i) => <Summary inv={i} />}</Show>
          {/* Bazel sends this id as RequestMetadata.tool_invocation_id on its remote calls. */}
          <p>
            <Link href={`/operations?all=1&invocation=${enc(id)}`}>Remote executions of this build →</Link>
          </p>
          <details class="remote">
            <summary>Remote cache and execution</summary>
            <RemoteActions id={id} tick={tick} />
          </details>
        </>
      )}
      {notYet ? null : targets.error !== undefined ? (
        <ErrorBox error={targets.error} />
      ) : (
        <Targets id={id} cts={targets.rows} done={targets.done} selected={selected} tick={tick} />
      )}
    </section>
  );
}

/** Every configured target, page after page (shown as they come); a refresh swaps in a whole new list. */
function useTargets(parent: string, tick: number) {
  // `tick`: the round these rows are from
  const [state, setState] = useState<{ rows: ConfiguredTarget[]; done: boolean; tick: number; error?: unknown }>({ rows: [], done: false, tick: 0 });
  useEffect(() => {
    const ac = new AbortController();
    (async () => {
      const rows: ConfiguredTarget[] = [];
      let pageToken = "";
      do {
        const res = await resultStore.listConfiguredTargets(
          { parent: `${parent}/targets/-`, pageSize: 1000, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } },
          { ...mask(CT_FIELDS), signal: ac.signal },
        );
        rows.push(...res.configuredTargets);
        pageToken = res.nextPageToken;
        if (tick === 0 && !ac.signal.aborted) setState({ rows: [...rows], done: !pageToken, tick });
      } while (pageToken);
      if (!ac.signal.aborted) setState({ rows, done: true, tick });
    })().catch((error) => !ac.signal.aborted && setState((s) => ({ ...s, error, done: true, tick })));
    return () => ac.abort();
  }, [parent, tick]);
  return state;
}

function Summary({ inv }: { inv: Invocation }) {
  const prop = (k: string) => inv.properties.find((p) => p.key === k)?.value;
  const commandLine = inv.workspaceInfo?.commandLines.find((c) => c.label === "original") ?? inv.workspaceInfo?.commandLines[0];
  // Bazel's original command line (startup options, every --client_env…) is long: the short form
  // is the command, the options given explicitly and the targets; the whole line is folded below.
  const full = commandLine ? (commandLine.args[0] === commandLine.tool ? commandLine.args : [commandLine.tool, ...commandLine.args]).filter(Boolean).join(" ") : "";
  const bazelCommand = prop("bazel.command");
  const targetArgs = commandLine && bazelCommand ? commandLine.args.slice(commandLine.args.indexOf(bazelCommand) + 1).filter((a) => !a.startsWith("-")) : [];
  const command = bazelCommand ? ["bazel", bazelCommand, prop("bazel.explicit_options"), ...targetArgs].filter(Boolean).join(" ") : full;
  return (
    <div class="summary">
      <KeyValues
        rows={[
          ["Status", <StatusBadge value={Status[inv.statusAttributes?.status ?? 0]} />],
          ["Started", when(inv.timing?.startTime)],
          ["Duration", ms(durationMs(inv.timing?.duration))],
          ["User", inv.invocationAttributes?.users.join(", ") || "—"],
          ["Host", inv.workspaceInfo?.hostname || "—"],
          ["Labels", inv.invocationAttributes?.labels.join(", ") || "—"],
          ["Working directory", inv.workspaceInfo?.workingDirectory || "—"],
          ["Tool", prop("bazel.version") ? `Bazel ${prop("bazel.version")}` : "—"],
        ]}
      />
      {command && (
        <>
          <h2>Command line</h2>
          <pre class="command">{command}</pre>
          {full && full !== command && (
            <details>
              <summary>Full command line</summary>
              <pre class="command">{full}</pre>
            </details>
          )}
        </>
      )}
      {inv.statusAttributes?.description && <p class="description">{inv.statusAttributes.description}</p>}
      {inv.properties.length > 0 && (
        <details>
          <summary>Properties ({inv.properties.length}): options, build metadata, workspace status</summary>
          <KeyValues rows={inv.properties.map((p) => [p.key, <code>{p.value}</code>])} />
        </details>
      )}
      {inv.files.length > 0 && (
        <>
          <h2>Files</h2>
          <ul class="files">
            {inv.files.map((f) => (
              <li key={f.uid}>
                <FileLink file={f} />
              </li>
            ))}
          </ul>
        </>
      )}
    </div>
  );
}

function Targets({ id, cts, done, selected, tick }: { id: string; cts: ConfiguredTarget[]; done: boolean; selected: string | null; tick: number }) {
  const groups = useMemo(() => {
    const m = new Map<Status, ConfiguredTarget[]>();
    for (const ct of cts) {
      const s = ct.statusAttributes?.status ?? Status.STATUS_UNSPECIFIED;
      const list = m.get(s);
      if (list) list.push(ct);
      else m.set(s, [ct]);
    }
    return [...m.entries()].sort((a, b) => rank(a[0]) - rank(b[0]));
  }, [cts]);
  const [filter, setFilter] = useState<Status | null>(null);
  const shown = filter === null ? groups : groups.filter(([s]) => s === filter);
  // The first failing target is opened unless the URL names one.
  const target = selected ?? (groups.length && rank(groups[0]![0]) < rank(Status.CANCELLED) ? groups[0]![1][0]?.id?.targetId ?? null : null);

  return (
    <>
      <h2>
        Targets <span class="muted">({cts.length}{done ? "" : ", loading…"})</span>
      </h2>
      <div class="tabs" role="group" aria-label="target status filter">
        <button aria-pressed={filter === null} onClick={() => setFilter(null)}>
          All {cts.length}
        </button>
        {groups.map(([s, list]) => (
          <button key={s} aria-pressed={filter === s} class={`tab-${Status[s]}`} onClick={() => setFilter(filter === s ? null : s)}>
            {Status[s].replace(/_/g, " ")} {list.length}
          </button>
        ))}
      </div>
      <div class="split">
        <div class="target-groups">
          {shown.map(([s, list]) => (
            <TargetGroup key={s} id={id} status={s} list={list} selected={target} />
          ))}
        </div>
        {target && <TargetDetail key={target} id={id} ct={cts.find((c) => c.id?.targetId === target)} targetId={target} tick={tick} />}
      </div>
    </>
  );
}

function TargetGroup({ id, status, list, selected }: { id: string; status: Status; list: ConfiguredTarget[]; selected: string | null }) {
  const page = usePage(list, TARGET_PAGE);
  return (
    <div class="group">
      <h3>
        <StatusBadge value={Status[status]} /> {list.length}
      </h3>
      <table class="list targets" aria-label={`${Status[status]} targets`}>
        <tbody>
          {page.rows.map((ct) => {
            const t = ct.id?.targetId ?? "";
            const ta = ct.testAttributes;
            return (
              <tr key={ct.name} class={t === selected ? "selected" : undefined}>
                <td>
                  <Link href={`/invocations/${enc(id)}?target=${enc(t)}`} aria-current={t === selected ? "true" : undefined}>
                    {t}
                  </Link>
                </td>
                <td class="muted">{ta && (ta.totalShardCount > 1 || ta.totalRunCount > 1) ? `${ta.totalRunCount} runs × ${ta.totalShardCount} shards` : ""}</td>
                <td class="num">{ms(durationMs(ct.timing?.duration))}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <Pager {...page} label={`${Status[status]} targets`} />
    </div>
  );
}

/** A target's actions: test attempts by shard and run, each with its logs; build actions with their outputs. */
function TargetDetail({ id, ct, targetId, tick }: { id: string; ct?: ConfiguredTarget; targetId: string; tick: number }) {
  const parent = ct?.name ?? `invocations/${enc(id)}/targets/${enc(targetId)}/configuredTargets/-`;
  const actions = useLoad(async (signal) => {
    const all: Action[] = [];
    let pageToken = "";
    do {
      const res = await resultStore.listActions({ parent, pageSize: 1000, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } }, { ...mask(ACTION_FIELDS), signal });
      all.push(...res.actions);
      pageToken = res.nextPageToken;
    } while (pageToken);
    return all;
  }, [parent, tick]);
  return (
    <aside class="detail" aria-label={`target ${targetId}`}>
      <h2>{targetId}</h2>
      {ct && <StatusBadge value={Status[ct.statusAttributes?.status ?? 0]} />}
      <Show loaded={actions}>{(list) => <Actions actions={list} />}</Show>
    </aside>
  );
}

function Actions({ actions }: { actions: Action[] }) {
  const tests = actions
    .filter((a) => a.actionType.case === "testAction")
    .sort((a, b) => {
      const x = a.actionType.value as { shardNumber: number; runNumber: number; attemptNumber: number };
      const y = b.actionType.value as typeof x;
      return x.shardNumber - y.shardNumber || x.runNumber - y.runNumber || x.attemptNumber - y.attemptNumber;
    });
  const others = actions.filter((a) => a.actionType.case !== "testAction");
  // The first failed attempt's log is open; others open on request.
  const firstBad = tests.find((a) => rank(a.statusAttributes?.status ?? 0) < rank(Status.CANCELLED));
  const [open, setOpen] = useState<string | undefined>(firstBad?.name ?? tests[0]?.name);
  return (
    <>
      {tests.length > 0 && (
        <>
          <h3>Test results</h3>
          <table class="list" aria-label="test results">
            <thead>
              <tr>
                <th>Shard</th>
                <th>Run</th>
                <th>Attempt</th>
                <th>Status</th>
                <th>Duration</th>
                <th>Log</th>
              </tr>
            </thead>
            <tbody>
              {tests.map((a) => {
                if (a.actionType.case !== "testAction") return null;
                const t = a.actionType.value;
                return (
                  <tr key={a.name} class={open === a.name ? "selected" : undefined}>
                    <td class="num">{t.shardNumber}</td>
                    <td class="num">{t.runNumber}</td>
                    <td class="num">{t.attemptNumber}</td>
                    <td>
                      <StatusBadge value={Status[a.statusAttributes?.status ?? 0]} />
                    </td>
                    <td class="num">{ms(durationMs(a.timing?.duration))}</td>
                    <td>
                      <button aria-expanded={open === a.name} onClick={() => setOpen(open === a.name ? undefined : a.name)}>
                        {open === a.name ? "Hide log" : "Show log"}
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </>
      )}
      {tests
        .filter((a) => a.name === open)
        .map((a) => (
          <div key={a.name}>
            {a.actionType.case === "testAction" && a.actionType.value.testSuite && <TestCases suite={a.actionType.value.testSuite} />}
            <ActionFiles action={a} />
          </div>
        ))}
      {others.map((a) => (
        <div key={a.name} class="action">
          <h3>
            {a.id?.actionId} <StatusBadge value={Status[a.statusAttributes?.status ?? 0]} />
          </h3>
          {a.statusAttributes?.description && <pre class="description">{a.statusAttributes.description}</pre>}
          <ActionFiles action={a} />
        </div>
      ))}
    </>
  );
}

/** test.log (or stdout/stderr) shown inline; every file listed with a link. */
function ActionFiles({ action }: { action: Action }) {
  const logs = action.files.filter((f) => /(^|\/)(test\.log|stdout|stderr)$/.test(f.uid));
  return (
    <div class="action-files">
      {logs.map((f) => (
        <div key={f.uid}>
          <h4>{f.uid}</h4>
          <LogView source={fileSource(f)} label={f.uid} />
        </div>
      ))}
      {action.files.length > 0 && (
        <ul class="files">
          {action.files.map((f) => (
            <li key={f.uid}>
              <FileLink file={f} />
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** A ResultStore File read through ResultStoreFileDownload: GetFileTail first, GetFile for earlier bytes. */
function fileSource(f: File): LogSource {
  return {
    key: f.uri,
    size: fileSize(f),
    async read(offset, limit, signal) {
      const parts: Uint8Array[] = [];
      for await (const r of resultFiles.getFile({ uri: f.uri, readOffset: offset, readLimit: limit }, { signal })) parts.push(r.data);
      return concat(parts);
    },
    async tail(limit, signal) {
      return (await resultFiles.getFileTail({ uri: f.uri, readLimit: limit }, { signal })).data;
    },
  };
}
