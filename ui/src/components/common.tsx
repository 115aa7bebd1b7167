// Small shared pieces: async data loading, errors, status badges, download links, key/value tables.
import { Code, ConnectError } from "@connectrpc/connect";
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { authHeaders, apiKey } from "../api.ts";

export interface Loaded<T> {
  data?: T;
  error?: unknown;
  loading: boolean;
}

/** Runs `load` when `deps` change; the previous run is aborted, so late answers never overwrite. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<Loaded<T>>({ loading: true });
  useEffect(() => {
    const ac = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    load(ac.signal).then(
      (data) => !ac.signal.aborted && setState({ data, loading: false }),
      (error) => !ac.signal.aborted && setState({ error, loading: false }),
    );
    return () => ac.abort();
  }, deps);
  return state;
}

export function errorText(e: unknown): string {
  if (e instanceof ConnectError) return `${e.code ? codeName(e.code) : "error"}: ${e.rawMessage}`;
  return e instanceof Error ? e.message : String(e);
}

/** gRPC's name of a status code (NOT_FOUND, CANCELLED), not connect-es's (NotFound, Canceled). */
export function codeName(code: number): string {
  if (code === 0) return "OK";
  if (code === Code.Canceled) return "CANCELLED";
  return Code[code]?.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() ?? `code ${code}`;
}

export function ErrorBox({ error }: { error: unknown }) {
  const text = errorText(error);
  const auth = /UNAUTHENTICATED|PERMISSION_DENIED/.test(text);
  return (
    <div class="error" role="alert">
      {text}
      {auth && !apiKey.get() && <div>This server needs an API key: enter one in the field at the top right.</div>}
    </div>
  );
}

/** Loading / error / content, for a useLoad result. */
export function Show<T>({ loaded, children }: { loaded: Loaded<T>; children: (data: T) => ComponentChildren }) {
  if (loaded.error !== undefined) return <ErrorBox error={loaded.error} />;
  if (loaded.data === undefined) return <p class="loading">Loading…</p>;
  return <>{children(loaded.data)}</>;
}

/** A status word as a coloured badge: PASSED/BUILT green, FAILED red, FLAKY amber, … */
export function StatusBadge({ value, tone }: { value: string; tone?: "good" | "bad" | "warn" | "busy" }) {
  return <span class={`status status-${tone ?? statusClass(value)}`}>{value.replace(/_/g, " ")}</span>;
}

function statusClass(value: string): string {
  if (/FAIL|TIMED_OUT|INCOMPLETE|TOOL_FAILED|ERROR/.test(value)) return "bad";
  if (/FLAKY|CANCELLED|UNKNOWN|SKIPPED|UNSPECIFIED/.test(value)) return "warn";
  if (/PASS|BUILT|COMPLETED|OK/.test(value)) return "good";
  return "busy";
}

/** A download of a CAS blob via the blob HTTP surface; with an API key it fetches with the header. */
export function Download({ href, name, children }: { href: string; name: string; children: ComponentChildren }) {
  const onClick = async (e: MouseEvent) => {
    if (!apiKey.get()) return;
    e.preventDefault();
    const res = await fetch(href, { headers: authHeaders() });
    if (!res.ok) return alert(`download failed: HTTP ${res.status}`);
    const url = URL.createObjectURL(await res.blob());
    const a = Object.assign(document.createElement("a"), { href: url, download: name });
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  };
  return (
    <a href={href} download={name} onClick={onClick}>
      {children}
    </a>
  );
}

export function KeyValues({ rows }: { rows: [string, ComponentChildren][] }) {
  return (
    <table class="kv">
      <tbody>
        {rows.map(([k, v]) => (
          <tr key={k}>
            <th scope="row">{k}</th>
            <td>{v}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Client-side pages of a long list, so 10,000 rows cost one page of DOM. The list may grow. */
export function usePage<T>(items: T[], size: number) {
  const [page, setPage] = useState(0);
  const pages = Math.max(1, Math.ceil(items.length / size));
  const p = Math.min(page, pages - 1);
  return { rows: items.slice(p * size, (p + 1) * size), page: p, pages, setPage };
}

export function Pager({ page, pages, setPage, label }: { page: number; pages: number; setPage(n: number): void; label: string }) {
  if (pages <= 1) return null;
  return (
    <nav class="pager" aria-label={`${label} pages`}>
      <button disabled={page === 0} onClick={() => setPage(page - 1)}>
        ‹ Previous
      </button>
      <span>
        page {page + 1} of {pages}
      </span>
      <button disabled={page >= pages - 1} onClick={() => setPage(page + 1)}>
        Next ›
      </button>
    </nav>
  );
}
