// A build's remote cache and execution calls (kiln.invocation.v1.RemoteActions): totals, then the
// actions page by page, each linked to its action page (bb-browser's view of the action).
import { useState } from "preact/hooks";
import type { RemoteAction } from "../../../src/gen/kiln/invocation/v1/remote_actions_pb.ts";
import { remoteActions } from "../api.ts";
import { ErrorBox, Show, useLoad } from "./common.tsx";
import { when } from "../format.ts";
import { Link, digestPath } from "../router.tsx";

const PAGE = 50;

export function RemoteActions({ id, tick }: { id: string; tick: number }) {
  // Page tokens of the pages seen so far: [""] is the first page.
  const [tokens, setTokens] = useState<string[]>([""]);
  const token = tokens.at(-1)!;
  const page = useLoad((signal) => remoteActions.listRemoteActions({ name: `invocations/${id}`, pageSize: PAGE, pageToken: token }, { signal }), [id, token, tick]);
  if (page.error !== undefined) return <ErrorBox error={page.error} />;
  return (
    <Show loaded={page}>
      {(p) =>
        p.totalActions === 0n ? (
          <p class="muted">No remote cache or execution calls named this build (Bazel sends its invocation id with each one).</p>
        ) : (
          <div class="remote-actions">
            <p>
              {`${p.totalActions} actions: ${p.totalCacheHits} cache hits, ${p.totalCacheMisses} misses, ${p.totalCacheWrites} uploads, ${p.totalExecutions} remote executions`}
            </p>
            <table class="list" aria-label="remote actions">
              <thead>
                <tr>
                  <th>Action</th>
                  <th>Target</th>
                  <th>Hits</th>
                  <th>Misses</th>
                  <th>Uploads</th>
                  <th>Executions</th>
                  <th>Last call</th>
                </tr>
              </thead>
              <tbody>
                {p.remoteActions.map((a) => (
                  <Row a={a} />
                ))}
              </tbody>
            </table>
            <nav class="pager">
              <button disabled={tokens.length === 1} onClick={() => setTokens(tokens.slice(0, -1))}>
                ← Previous
              </button>
              <button disabled={!p.nextPageToken} onClick={() => setTokens([...tokens, p.nextPageToken])}>
                Next →
              </button>
            </nav>
          </div>
        )
      }
    </Show>
  );
}

function Row({ a }: { a: RemoteAction }) {
  const d = a.actionDigest!;
  return (
    <tr>
      <td>
        <Link href={digestPath("actions", a.instanceName, d)}>
          <code>{d.hash.slice(0, 12)}</code>
        </Link>
        {a.actionMnemonic && <span class="muted"> {a.actionMnemonic}</span>}
      </td>
      <td>{a.targetId || "—"}</td>
      <td>{String(a.cacheHits)}</td>
      <td>{String(a.cacheMisses)}</td>
      <td>{String(a.cacheWrites)}</td>
      <td>{String(a.executions)}</td>
      <td>{when(a.lastCallTime)}</td>
    </tr>
  );
}
