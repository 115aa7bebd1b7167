// Invocations: SearchInvocations with the ResultStore query language, or the simple fields
// (user, label, status) that build one; newest first, paged by the server's page tokens.
import { useState } from "preact/hooks";
import { Status } from "../../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { mask, resultStore } from "../api.ts";
import { Show, StatusBadge, useLoad } from "../components/common.tsx";
import { durationMs, ms, when } from "../format.ts";
import { Link, navigate } from "../router.tsx";

const PAGE = 50;
const FIELDS = "invocations.id,invocations.status_attributes,invocations.timing,invocations.invocation_attributes,invocations.workspace_info.hostname,invocations.properties,next_page_token";
/** SearchInvocations needs a query: this one matches every invocation that has started. */
const EVERYTHING = `timing.start_time >= "1970-01-01T00:00:00Z"`;
const quote = (s: string) => `"${s.replace(/["\\]/g, "\\$&")}"`;

function buildQuery(p: URLSearchParams): string {
  const terms: string[] = [];
  const q = p.get("q")?.trim();
  if (q) terms.push(`(${q})`);
  if (p.get("user")) terms.push(`invocation_attributes.users:${quote(p.get("user")!)}`);
  if (p.get("label")) terms.push(`invocation_attributes.labels:${quote(p.get("label")!)}`);
  if (p.get("status")) terms.push(`status_attributes.status = ${p.get("status")}`);
  return terms.length ? terms.join(" AND ") : EVERYTHING;
}

const STATUSES = Object.keys(Status).filter((k) => isNaN(Number(k)) && k !== "STATUS_UNSPECIFIED");

export function InvocationsPage({ url }: { url: URL }) {
  const params = url.searchParams;
  const query = buildQuery(params);
  // page tokens of the pages before this one, so "Previous" works without the server's help
  const [tokens, setTokens] = useState<string[]>([""]);
  const token = tokens[tokens.length - 1]!;
  const loaded = useLoad(
    (signal) => resultStore.searchInvocations({ query, pageSize: PAGE, pageStart: token ? { case: "pageToken", value: token } : { case: undefined } }, { ...mask(FIELDS), signal }),
    [query, token],
  );

  const submit = (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const next = new URLSearchParams();
    for (const k of ["q", "user", "label", "status"]) {
      const v = String(form.get(k) ?? "").trim();
      if (v) next.set(k, v);
    }
    setTokens([""]);
    navigate(`/?${next}`);
  };

  return (
    <section>
      <h1>Invocations</h1>
      <form class="search" onSubmit={submit} role="search">
        <label class="wide">
          Query <input name="q" defaultValue={params.get("q") ?? ""} placeholder='e.g. invocation_attributes.labels:nightly AND timing.start_time > "2026-11-01T00:00:00Z"' />
        </label>
        <label>
          User <input name="user" defaultValue={params.get("user") ?? ""} />
        </label>
        <label>
          Label <input name="label" defaultValue={params.get("label") ?? ""} />
        </label>
        <label>
          Status{" "}
          <select name="status" defaultValue={params.get("status") ?? ""}>
            <option value="">any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Search</button>
      </form>
      <p class="muted query">
        query: <code>{query}</code>
      </p>
      <Show loaded={loaded}>
        {(res) => (
          <>
            {res.invocations.length === 0 ? (
              <p>No invocations match.</p>
            ) : (
              <table class="list" aria-label="invocations">
                <thead>
                  <tr>
                    <th>Status</th>
                    <th>Invocation</th>
                    <th>Command</th>
                    <th>User</th>
                    <th>Host</th>
                    <th>Labels</th>
                    <th>Started</th>
                    <th>Duration</th>
                  </tr>
                </thead>
                <tbody>
                  {res.invocations.map((inv) => {
                    const id = inv.id?.invocationId ?? "";
                    const command = inv.properties.find((p) => p.key === "bazel.command")?.value ?? "";
                    return (
                      <tr key={id}>
                        <td>
                          <StatusBadge value={Status[inv.statusAttributes?.status ?? 0]} />
                        </td>
                        <td>
                          <Link href={`/invocations/${encodeURIComponent(id)}`}>{id}</Link>
                        </td>
                        <td>{command}</td>
                        <td>{inv.invocationAttributes?.users.join(", ")}</td>
                        <td>{inv.workspaceInfo?.hostname}</td>
                        <td>{inv.invocationAttributes?.labels.join(", ")}</td>
                        <td>{when(inv.timing?.startTime)}</td>
                        <td>{ms(durationMs(inv.timing?.duration))}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            )}
            <nav class="pager" aria-label="invocation pages">
              <button disabled={tokens.length === 1} onClick={() => setTokens(tokens.slice(0, -1))}>
                ‹ Newer
              </button>
              <span>page {tokens.length}</span>
              <button disabled={!res.nextPageToken} onClick={() => setTokens([...tokens, res.nextPageToken])}>
                Older ›
              </button>
            </nav>
          </>
        )}
      </Show>
    </section>
  );
}
