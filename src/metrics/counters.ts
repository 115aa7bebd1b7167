// The isolate's counters: a name, a label set, a number. Everything /metrics shows that is not
// read from a Durable Object at scrape time lives here.
//
// PER-ISOLATE: these live in the memory of the isolate that counted them. A deployed worker runs
// many isolates (and Durable Objects run in isolates of their own), each with its own counters,
// which vanish when the isolate is evicted; a scrape sees one isolate's share since it started
// (kiln_isolate_start_time_seconds says when). Totals across isolates come from Workers Analytics
// Engine (metrics/analytics.ts), which receives the same counts as data points.

export type Labels = Record<string, string>;

/** Every counter Kiln keeps, with the HELP line /metrics prints for it. */
export const COUNTERS = {
  kiln_requests_total: "Requests answered, by surface, method and google.rpc code.",
  kiln_request_bytes_total: "Request and response bytes (Content-Length; streamed Connect/gRPC-web bodies as counted).",
  kiln_action_cache_lookups_total: "GetActionResult (every surface) by result: hit, or miss (absent, or its blobs gone).",
  kiln_cas_lookups_total: "CAS digests looked up, by kind (find_missing: digests asked about; read: blob reads) and result.",
  kiln_r2_operations_total: "R2 operations by billing class (A, B, free), operation and the request kind that made them.",
  kiln_do_requests_total: "Billed Durable Object requests (RPC calls, fetches, alarms, WebSocket messages) by object, method and request kind.",
  kiln_index_write_failures_total: "D1 index writes that failed and wait for a retry (operations, resultstore).",
  kiln_index_retry_entered_total: "Objects whose D1 index write began to wait for a retry (their first failure in a row); minus kiln_index_retry_cleared_total: the retry backlog.",
  kiln_index_retry_cleared_total: "Objects whose D1 index write succeeded (or was dead-lettered) after waiting for a retry.",
} as const;
export type CounterName = keyof typeof COUNTERS;

const values = new Map<CounterName, Map<string, number>>();
/**
 * Label sets per counter. Methods come from request paths, which a client chooses: past this many
 * series a counter's new label sets count under {overflow="true"}, so memory stays bounded.
 */
const MAX_SERIES = 2000;
const OVERFLOW = 'overflow="true"';
/** The series key for `labels` in a map of series: the overflow series once the map is full. */
export function seriesKey(m: Map<string, unknown>, labels: Labels): string {
  const key = labelText(labels);
  return m.has(key) || m.size < MAX_SERIES ? key : OVERFLOW;
}
export const startedAt = Date.now();

const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
/** Labels in the exposition's syntax: a="x",b="y". */
export const labelText = (l: Labels) =>
  Object.entries(l)
    .map(([k, v]) => `${k}="${escape(v)}"`)
    .join(",");

export function count(name: CounterName, labels: Labels, n = 1): void {
  if (!n) return;
  let m = values.get(name);
  if (!m) values.set(name, (m = new Map()));
  const key = seriesKey(m, labels);
  m.set(key, (m.get(key) ?? 0) + n);
}

/** The counters in the exposition format, HELP and TYPE lines included. */
export function renderCounters(out: string[]): void {
  for (const [name, help] of Object.entries(COUNTERS) as [CounterName, string][]) {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
    for (const [l, n] of values.get(name) ?? []) out.push(`${name}{${l}} ${n}`);
  }
}
