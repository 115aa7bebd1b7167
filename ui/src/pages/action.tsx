// One REAPI action (bb-browser's action page): the Action, its Command, the input root as a tree,
// and the cached ActionResult with outputs, stdout/stderr and the execution timeline.
import { Code, ConnectError } from "@connectrpc/connect";
import { ActionSchema, CommandSchema, DirectorySchema, type ActionResult, type Digest, type ExecutedActionMetadata, type Platform } from "../../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { actionCache } from "../api.ts";
import { blobUrl, readBytes, readMessage, resourceName } from "../blobs.ts";
import { Download, KeyValues, Show, useLoad } from "../components/common.tsx";
import { AnsiText, LogView } from "../components/log-view.tsx";
import { casLoader, DirectoryView } from "../components/tree.tsx";
import { bytes, durationMs, millis, ms } from "../format.ts";
import { digestPath, Link } from "../router.tsx";

const short = (d?: Digest) => (d ? `${d.hash}/${d.sizeBytes}` : "—");

export function ActionPage({ instance, digest }: { instance: string; digest: Digest }) {
  const action = useLoad(() => readMessage(ActionSchema, instance, digest), [instance, digest.hash]);
  const result = useLoad(async (signal) => {
    try {
      return await actionCache.getActionResult({ instanceName: instance, actionDigest: digest }, { signal });
    } catch (e) {
      if (ConnectError.from(e).code === Code.NotFound) return null;
      throw e;
    }
  }, [instance, digest.hash]);
  return (
    <section>
      <h1>
        Action <code>{short(digest)}</code>
      </h1>
      <p class="muted">instance: {instance === "" ? "(empty)" : <code>{instance}</code>}</p>
      <Show loaded={action}>
        {(a) => (
          <>
            <KeyValues
              rows={[
                ["Command", <Link href={`${digestPath("cas", instance, a.commandDigest!)}?as=command`}>{short(a.commandDigest)}</Link>],
                ["Input root", <Link href={`${digestPath("cas", instance, a.inputRootDigest!)}?as=directory`}>{short(a.inputRootDigest)}</Link>],
                ["Timeout", a.timeout ? ms(durationMs(a.timeout)) : "server default"],
                ["Do not cache", a.doNotCache ? "yes" : "no"],
                ["Platform", <PlatformView platform={a.platform} />],
              ]}
            />
            {a.commandDigest && <CommandView instance={instance} digest={a.commandDigest} />}
            {a.inputRootDigest && <InputRoot instance={instance} digest={a.inputRootDigest} />}
          </>
        )}
      </Show>
      <h2>Result</h2>
      <Show loaded={result}>{(r) => (r ? <ResultView instance={instance} result={r} /> : <p>No result for this action in the action cache.</p>)}</Show>
    </section>
  );
}

function PlatformView({ platform }: { platform?: Platform }) {
  if (!platform?.properties.length) return <span class="muted">(none)</span>;
  return (
    <ul class="plain">
      {platform.properties.map((p) => (
        <li key={p.name}>
          <code>
            {p.name}={p.value}
          </code>
        </li>
      ))}
    </ul>
  );
}

export function CommandView({ instance, digest }: { instance: string; digest: Digest }) {
  const cmd = useLoad(() => readMessage(CommandSchema, instance, digest), [instance, digest.hash]);
  return (
    <>
      <h2>Command</h2>
      <Show loaded={cmd}>
        {(c) => (
          <>
            <h3>Arguments</h3>
            <ol class="args" aria-label="arguments">
              {c.arguments.map((a, i) => (
                <li key={i}>
                  <code>{a}</code>
                </li>
              ))}
            </ol>
            <h3>Environment</h3>
            {c.environmentVariables.length === 0 ? (
              <p class="muted">(none)</p>
            ) : (
              <KeyValues rows={c.environmentVariables.map((e) => [e.name, <code>{e.value}</code>])} />
            )}
            <KeyValues
              rows={[
                ["Working directory", c.workingDirectory || "(input root)"],
                ["Output paths", [...c.outputPaths, ...c.outputFiles, ...c.outputDirectories].join(", ") || "—"],
                ["Platform", <PlatformView platform={c.platform} />],
              ]}
            />
          </>
        )}
      </Show>
    </>
  );
}

function InputRoot({ instance, digest }: { instance: string; digest: Digest }) {
  const root = useLoad(() => readMessage(DirectorySchema, instance, digest), [instance, digest.hash]);
  return (
    <>
      <h2>Input root</h2>
      <Show loaded={root}>{(d) => <DirectoryView instance={instance} dir={d} load={casLoader(instance)} />}</Show>
    </>
  );
}

function ResultView({ instance, result }: { instance: string; result: ActionResult }) {
  return (
    <>
      <KeyValues
        rows={[
          ["Exit code", <span class={result.exitCode === 0 ? "status status-good" : "status status-bad"}>{result.exitCode}</span>],
          ["Worker", result.executionMetadata?.worker || "—"],
        ]}
      />
      {result.executionMetadata && <Timeline meta={result.executionMetadata} />}
      <h3>Outputs</h3>
      <ul class="files" aria-label="outputs">
        {result.outputFiles.map((f) => (
          <li key={f.path}>
            <Link href={`${digestPath("cas", instance, f.digest!)}?as=raw`}>{f.path}</Link> <span class="muted">{bytes(f.digest?.sizeBytes ?? 0n)}</span>{" "}
            <Download href={blobUrl(instance, f.digest!)} name={f.path.split("/").pop()!}>
              download
            </Download>
          </li>
        ))}
        {result.outputDirectories.map((d) => (
          <li key={d.path}>
            <Link href={`${digestPath("cas", instance, d.treeDigest!)}?as=tree`}>{d.path}/</Link> <span class="muted">(Tree)</span>
          </li>
        ))}
        {[...result.outputSymlinks, ...result.outputFileSymlinks, ...result.outputDirectorySymlinks].map((s) => (
          <li key={s.path}>
            {s.path} → <code>{s.target}</code>
          </li>
        ))}
        {result.outputFiles.length + result.outputDirectories.length + result.outputSymlinks.length === 0 && <li class="muted">(none)</li>}
      </ul>
      <Output instance={instance} label="stdout" raw={result.stdoutRaw} digest={result.stdoutDigest} />
      <Output instance={instance} label="stderr" raw={result.stderrRaw} digest={result.stderrDigest} />
    </>
  );
}

function Output({ instance, label, raw, digest }: { instance: string; label: string; raw: Uint8Array; digest?: Digest }) {
  return (
    <>
      <h3>{label}</h3>
      {raw.length > 0 ? (
        <div class="log" aria-label={label}>
          <AnsiText text={new TextDecoder().decode(raw)} />
        </div>
      ) : digest && digest.sizeBytes > 0n ? (
        <LogView label={label} source={{ key: digest.hash, size: digest.sizeBytes, read: (o, l, signal) => readBytes(resourceName(instance, digest), o, l, signal) }} />
      ) : (
        <p class="muted">(empty)</p>
      )}
    </>
  );
}

const PHASES: [string, keyof ExecutedActionMetadata, keyof ExecutedActionMetadata][] = [
  ["queued", "queuedTimestamp", "workerStartTimestamp"],
  ["input fetch", "inputFetchStartTimestamp", "inputFetchCompletedTimestamp"],
  ["execution", "executionStartTimestamp", "executionCompletedTimestamp"],
  ["output upload", "outputUploadStartTimestamp", "outputUploadCompletedTimestamp"],
];

/** The execution metadata's phases as bars on one time axis. */
function Timeline({ meta }: { meta: ExecutedActionMetadata }) {
  const t = (k: keyof ExecutedActionMetadata) => millis(meta[k] as never);
  const phases = PHASES.map(([name, a, b]) => ({ name, start: t(a), end: t(b) })).filter((p) => p.start !== undefined && p.end !== undefined) as { name: string; start: number; end: number }[];
  if (phases.length === 0) return null;
  const t0 = Math.min(...phases.map((p) => p.start), t("workerStartTimestamp") ?? Infinity);
  const t1 = Math.max(...phases.map((p) => p.end), t("workerCompletedTimestamp") ?? -Infinity);
  const span = Math.max(1, t1 - t0);
  return (
    <div class="timeline" aria-label="execution timeline">
      {phases.map((p) => (
        <div class="phase" key={p.name}>
          <span class="phase-name">{p.name}</span>
          <span class="phase-track">
            <span class={`phase-bar phase-${p.name.replace(" ", "-")}`} style={{ left: `${((p.start - t0) / span) * 100}%`, width: `${Math.max(0.5, ((p.end - p.start) / span) * 100)}%` }} />
          </span>
          <span class="phase-time">{ms(p.end - p.start)}</span>
        </div>
      ))}
    </div>
  );
}
