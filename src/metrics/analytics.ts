// The same counts as /metrics, as Workers Analytics Engine data points, when an ANALYTICS
// dataset binding is configured (wrangler.toml, commented out by default). Analytics Engine sums
// across every isolate and Durable Object, which the per-isolate counters cannot.
//
// Layout (query with SQL over the dataset; index1 is the tenant, or "internal"):
//   request:  blob1 "request", blob2 surface, blob3 method, blob4 code, blob5 tenant
//             double1 requests (1), double2 seconds, double3 bytes in, double4 bytes out,
//             double5 R2 Class A, double6 R2 Class B, double7 Durable Object requests,
//             double8 action-cache hits, double9 action-cache misses,
//             double10 CAS digests found, double11 CAS digests missing
//   internal: blob1 "internal", blob2 counter name, blob3 its labels, blob4 request kind; double1 the count
import { env } from "cloudflare:workers";
import type { Env } from "../env.ts";
import { labelText, type CounterName, type Labels } from "./counters.ts";
import type { Tally } from "./request-tally.ts";

export interface RequestSummary {
  surface: string;
  method: string;
  code: string;
  tenant?: string;
  ms: number;
  bytesIn?: number;
  bytesOut?: number;
}

const dataset = () => (env as unknown as Env).ANALYTICS;

/** A refused point (over 250 per invocation, say) must never fail the request it describes. */
function write(point: AnalyticsEngineDataPoint): void {
  try {
    dataset()?.writeDataPoint(point);
  } catch (e) {
    console.warn("analytics engine write failed", String(e));
  }
}

export function writeRequestPoint(r: RequestSummary, t: Tally): void {
  if (!dataset()) return;
  const tenant = r.tenant ?? "";
  write({
    indexes: [tenant.slice(0, 96)],
    blobs: ["request", r.surface, r.method, r.code, tenant],
    doubles: [
      1,
      r.ms / 1000,
      r.bytesIn ?? 0,
      r.bytesOut ?? 0,
      t.sum("kiln_r2_operations_total", { class: "A" }),
      t.sum("kiln_r2_operations_total", { class: "B" }),
      t.sum("kiln_do_requests_total"),
      t.sum("kiln_action_cache_lookups_total", { result: "hit" }),
      t.sum("kiln_action_cache_lookups_total", { result: "miss" }),
      t.sum("kiln_cas_lookups_total", { result: "hit" }),
      t.sum("kiln_cas_lookups_total", { result: "miss" }),
    ],
  });
}

export function writeInternalPoint(name: CounterName, labels: Labels, n: number, request: string): void {
  if (!dataset()) return;
  write({ indexes: ["internal"], blobs: ["internal", name, labelText(labels), request], doubles: [n] });
}
