// GET /metrics in the Prometheus text format: requests by surface, method and code, latency
// histograms, bytes in and out, fed by the access log's finished-request records.
//
// PER-ISOLATE: these counters live in the memory of the isolate that served the requests. A
// deployed worker runs many isolates, each with its own counters, and an isolate's counters
// vanish when it is evicted; a scrape sees one isolate's share since that isolate started
// (kiln_isolate_start_time_seconds says when). Totals across isolates need Workers Analytics
// Engine or a Durable Object, which this first version does not have.
import { onRequestDone, type AccessRecord } from "./access-log.ts";

/** Upper bounds of the latency buckets, in seconds (Prometheus convention). */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

interface Histogram {
  counts: number[];
  sum: number;
  count: number;
}

const requests = new Map<string, number>();
const bytes = new Map<string, number>();
const latency = new Map<string, Histogram>();
const startedAt = Date.now();

const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
const labels = (l: Record<string, string>) => Object.entries(l).map(([k, v]) => `${k}="${escape(v)}"`).join(",");
const add = (m: Map<string, number>, key: string, n: number) => m.set(key, (m.get(key) ?? 0) + n);

function observe(r: AccessRecord): void {
  add(requests, labels({ surface: r.surface, method: r.method, code: r.code }), 1);
  if (r.bytesIn) add(bytes, labels({ surface: r.surface, direction: "in" }), r.bytesIn);
  if (r.bytesOut) add(bytes, labels({ surface: r.surface, direction: "out" }), r.bytesOut);
  const key = labels({ surface: r.surface, method: r.method });
  let h = latency.get(key);
  if (!h) latency.set(key, (h = { counts: BUCKETS.map(() => 0), sum: 0, count: 0 }));
  const s = r.ms / 1000;
  BUCKETS.forEach((b, i) => {
    if (s <= b) h.counts[i]!++;
  });
  h.sum += s;
  h.count++;
}

onRequestDone(observe);

/** The exposition text (format 0.0.4). */
export function renderMetrics(): string {
  const out: string[] = [];
  out.push("# HELP kiln_isolate_start_time_seconds When this isolate started counting (the counters below are per isolate).");
  out.push("# TYPE kiln_isolate_start_time_seconds gauge");
  out.push(`kiln_isolate_start_time_seconds ${startedAt / 1000}`);
  out.push("# HELP kiln_requests_total Requests answered, by surface, method and google.rpc code.");
  out.push("# TYPE kiln_requests_total counter");
  for (const [l, n] of requests) out.push(`kiln_requests_total{${l}} ${n}`);
  out.push("# HELP kiln_request_bytes_total Request and response bytes (Content-Length; streamed Connect/gRPC-web bodies as counted).");
  out.push("# TYPE kiln_request_bytes_total counter");
  for (const [l, n] of bytes) out.push(`kiln_request_bytes_total{${l}} ${n}`);
  out.push("# HELP kiln_request_duration_seconds Time to the answer (to the end of the body for streams).");
  out.push("# TYPE kiln_request_duration_seconds histogram");
  for (const [l, h] of latency) {
    BUCKETS.forEach((b, i) => out.push(`kiln_request_duration_seconds_bucket{${l},le="${b}"} ${h.counts[i]}`));
    out.push(`kiln_request_duration_seconds_bucket{${l},le="+Inf"} ${h.count}`);
    out.push(`kiln_request_duration_seconds_sum{${l}} ${h.sum}`);
    out.push(`kiln_request_duration_seconds_count{${l}} ${h.count}`);
  }
  return out.join("\n") + "\n";
}
