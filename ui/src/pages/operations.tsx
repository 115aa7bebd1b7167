// Execution operations (BuildBuddy's executions view): ListOperations, with the unfinished ones
// followed live over WaitExecution streams, a running action's stdout from its live log stream
// (ByteStream Read of stdout_stream_name), and Cancel.
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { useEffect, useRef, useState } from "preact/hooks";
import { ExecuteOperationMetadataSchema, ExecuteResponseSchema, ExecutionStage_Value } from "../../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import type { Operation } from "../../../src/gen/google/longrunning/operations_pb.ts";
import { byteStream, execution, operations } from "../api.ts";
import { codeName, errorText, Show, StatusBadge, useLoad } from "../components/common.tsx";
import { AnsiText } from "../components/log-view.tsx";
import { digestPath, Link, navigate } from "../router.tsx";

const PAGE = 50;
const POLL_MS = 5000;
/** Streams held open at once: browsers allow 6 HTTP/1.1 connections per origin (local dev). */
const MAX_WATCHES = 3;

export function OperationsPage({ url }: { url: URL }) {
  const all = url.searchParams.get("all") === "1";
  const instance = url.searchParams.get("instance") ?? "";
  // A build's remote executions: the invocation id Bazel sends as RequestMetadata.tool_invocation_id.
  const invocation = url.searchParams.get("invocation") ?? "";
  const [tick, setTick] = useState(0);
  const filter = [all ? "" : "done=false", invocation ? `tool_invocation_id="${invocation.replace(/"/g, "")}"` : ""].filter(Boolean).join(" AND ");
  const list = useLoad(
    (signal) => operations.listOperations({ name: instance ? `${instance}/operations` : "operations", filter, pageSize: PAGE }, { signal }),
    [all, instance, invocation, tick],
  );
  const seen = useRef(new Map<string, Operation>());
  const go = (next: { all?: boolean; instance?: string }) => {
    const p = new URLSearchParams();
    if (next.all ?? all) p.set("all", "1");
    if ((next.instance ?? instance) !== "") p.set("instance", next.instance ?? instance);
    if (invocation) p.set("invocation", invocation);
    seen.current.clear();
    navigate(`/operations${p.size ? `?${p}` : ""}`, true);
  };
  useEffect(() => {
    const t = setTimeout(() => setTick((n) => n + 1), POLL_MS);
    return () => clearTimeout(t);
  }, [tick]);
  // Operations seen while this page is open stay listed: one that finished leaves the done=false
  // list, and its row then asks for its final state once (`gone`).
  const listed = new Set((list.data?.operations ?? []).map((op) => op.name));
  for (const op of list.data?.operations ?? []) seen.current.set(op.name, op);
  const ops = [...seen.current.values()];
  const watched = new Set(ops.filter((op) => !op.done).slice(0, MAX_WATCHES).map((op) => op.name));
  return (
    <section>
      <h1>Operations{invocation ? <> of invocation <code>{invocation}</code></> : null}</h1>
      <form class="search" onSubmit={(e) => (e.preventDefault(), go({ instance: String(new FormData(e.currentTarget as HTMLFormElement).get("instance") ?? "").trim() }))}>
        <label>
          Instance <input name="instance" defaultValue={instance} placeholder="every instance" />
        </label>
        <button type="submit">Show</button>
        <label class="inline">
          <input type="checkbox" checked={all} onChange={(e) => go({ all: (e.currentTarget as HTMLInputElement).checked })} /> include finished
        </label>
      </form>
      <Show loaded={list}>
        {() =>
          ops.length === 0 ? (
            <p>No {all ? "" : "queued or running "}operations.</p>
          ) : (
            <table class="list" aria-label="operations">
              <thead>
                <tr>
                  <th>Operation</th>
                  <th>Stage</th>
                  <th>Action</th>
                  <th>Result</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {ops.map((op) => (
                  <OperationRow key={op.name} polled={op} gone={list.data !== undefined && !listed.has(op.name)} instance={instance} watch={watched.has(op.name)} />
                ))}
              </tbody>
            </table>
          )
        }
      </Show>
    </section>
  );
}

/**
 * One operation: its latest state from the poll, or newer from its WaitExecution stream (`watch`),
 * or, once it left the list (`gone`), from one GetOperation.
 */
function OperationRow({ polled, gone, instance, watch }: { polled: Operation; gone: boolean; instance: string; watch: boolean }) {
  const [streamed, setStreamed] = useState<Operation>();
  const op = streamed?.done || (streamed && !polled.done) ? streamed : polled;
  const [error, setError] = useState<unknown>();
  const [showLog, setShowLog] = useState(false);
  useEffect(() => {
    if (!watch || op.done) return;
    const ac = new AbortController();
    (async () => {
      for await (const next of execution.waitExecution({ name: polled.name }, { signal: ac.signal })) setStreamed(next);
    })().catch((e) => !ac.signal.aborted && setError(e));
    return () => ac.abort();
  }, [polled.name, watch]);
  useEffect(() => {
    if (!gone || op.done) return;
    const ac = new AbortController();
    operations.getOperation({ name: polled.name }, { signal: ac.signal }).then(setStreamed, (e) => !ac.signal.aborted && setError(e));
    return () => ac.abort();
  }, [gone]);

  const meta = op.metadata ? anyUnpack(op.metadata, ExecuteOperationMetadataSchema) : undefined;
  const res = op.result.case === "response" ? anyUnpack(op.result.value, ExecuteResponseSchema) : undefined;
  // The metadata names no instance; a live stream's name does. Else the page's instance filter.
  const [actionInstance, setActionInstance] = useState(instance);
  const streamInstance = meta?.stdoutStreamName ? /^(?:(.+)\/)?operations\//.exec(meta.stdoutStreamName)?.[1] ?? "" : undefined;
  if (streamInstance !== undefined && streamInstance !== actionInstance) setActionInstance(streamInstance);
  const stage = op.done ? "COMPLETED" : ExecutionStage_Value[meta?.stage ?? 0];
  const cancel = async () => {
    try {
      await operations.cancelOperation({ name: op.name });
    } catch (e) {
      setError(e);
    }
  };
  const failed = op.result.case === "error" || !!res?.status?.code || !!res?.result?.exitCode;
  const outcome = op.result.case === "error" ? codeName(op.result.value.code) : res ? (res.status?.code ? `${codeName(res.status.code)}: ${res.status.message}` : `exit ${res.result?.exitCode ?? "?"}${res.cachedResult ? " (cached)" : ""}`) : "";
  return (
    <>
      <tr data-operation={op.name}>
        <td>
          <code>{op.name}</code>
        </td>
        <td>
          <StatusBadge value={stage} tone={op.done ? (failed ? "bad" : "good") : undefined} />
        </td>
        <td>{meta?.actionDigest ? <Link href={digestPath("actions", actionInstance, meta.actionDigest)}>{meta.actionDigest.hash.slice(0, 12)}…</Link> : "—"}</td>
        <td>{outcome}</td>
        <td class="buttons">
          {!op.done && meta?.stdoutStreamName && (
            <button aria-expanded={showLog} onClick={() => setShowLog(!showLog)}>
              {showLog ? "Hide output" : "Live output"}
            </button>
          )}
          {!op.done && <button onClick={cancel}>Cancel</button>}
        </td>
      </tr>
      {error !== undefined && (
        <tr>
          <td colSpan={5} class="error">
            {errorText(error)}
          </td>
        </tr>
      )}
      {showLog && meta?.stdoutStreamName && (
        <tr>
          <td colSpan={5}>
            <LiveLog name={meta.stdoutStreamName} />
          </td>
        </tr>
      )}
    </>
  );
}

/** A running action's stdout as it is written: one ByteStream Read that ends when the attempt ends. */
function LiveLog({ name }: { name: string }) {
  const [text, setText] = useState("");
  const [state, setState] = useState<"reading" | "ended" | unknown>("reading");
  useEffect(() => {
    const ac = new AbortController();
    const dec = new TextDecoder();
    (async () => {
      for await (const r of byteStream.read({ resourceName: name }, { signal: ac.signal })) setText((t) => t + dec.decode(r.data, { stream: true }));
      setState("ended");
    })().catch((e) => !ac.signal.aborted && setState(e));
    return () => ac.abort();
  }, [name]);
  return (
    <div class="log" aria-label="live output">
      <AnsiText text={text} />
      <p class="muted">{state === "reading" ? "…" : state === "ended" ? "(stream ended)" : errorText(state)}</p>
    </div>
  );
}
