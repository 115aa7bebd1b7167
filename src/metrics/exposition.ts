// GET /metrics in the Prometheus text format (0.0.4). Two kinds of series:
// - per-isolate counters (metrics/counters.ts): requests, latency, bytes, cache hits and misses,
//   billed operations; fed by the access log's finished-request records and by metrics/tally;
// - durable gauges read at scrape time from where the state lives: queue depth, running actions,
//   connected runners and the event outbox from each RunnerPoolDO shard; ResultStore invocations
//   and indexed operations from D1 (refreshed at most every 5 minutes). These are true for the
//   whole deployment, whichever isolate answers.
import { onRequestDone, type AccessRecord } from "../access-log.ts";
import { kilnEnv, poolShardCount } from "../config.ts";
import { poolStub } from "../execution/pool.ts";
import { count, labelText, renderCounters, seriesKey, startedAt } from "./counters.ts";
import { writeRequestPoint } from "./analytics.ts";
import { settle } from "./request-tally.ts";

/** Upper bounds of the latency buckets, in seconds (Prometheus convention). */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

interface Histogram {
  counts: number[];
  sum: number;
  count: number;
}

const latency = new Map<string, Histogram>();

function observe(r: AccessRecord): void {
  count("kiln_requests_total", { surface: r.surface, method: r.method, code: r.code });
  count("kiln_request_bytes_total", { surface: r.surface, direction: "in" }, r.bytesIn ?? 0);
  count("kiln_request_bytes_total", { surface: r.surface, direction: "out" }, r.bytesOut ?? 0);
  const key = seriesKey(latency, { surface: r.surface, method: r.method });
  let h = latency.get(key);
  if (!h) latency.set(key, (h = { counts: BUCKETS.map(() => 0), sum: 0, count: 0 }));
  const s = r.ms / 1000;
  BUCKETS.forEach((b, i) => {
    if (s <= b) h.counts[i]!++;
  });
  h.sum += s;
  h.count++;
  if (r.tally) {
    settle(r.tally, `${r.surface} ${r.method}`);
    writeRequestPoint(r, r.tally);
  }
}

onRequestDone(observe);

type Gauge = { name: string; help: string; samples: [labels: Record<string, string>, value: number][] };

/** Queue depth, running actions, runners and outbox backlog, from every pool shard. */
async function poolGauges(): Promise<Gauge[]> {
  const env = kilnEnv();
  const shards = poolShardCount();
  const stats = await Promise.all(Array.from({ length: shards }, (_, i) => poolStub(env, i).stats().then((s) => ({ shard: String(i), ...s }))));
  const gauge = (name: string, help: string, pick: (s: (typeof stats)[number]) => number): Gauge => ({ name, help, samples: stats.map((s) => [{ shard: s.shard }, pick(s)]) });
  return [
    gauge("kiln_pool_queued_actions", "Actions waiting for a runner (queue depth), per pool shard.", (s) => s.queued),
    gauge("kiln_pool_running_actions", "Actions leased to a runner, per pool shard.", (s) => s.running),
    gauge("kiln_pool_runners", "Runners connected (said Hello), per pool shard.", (s) => s.runners),
    gauge("kiln_pool_runner_slots", "Action slots of the connected runners, per pool shard.", (s) => s.slots),
    gauge("kiln_pool_outbox_events", "Operation events the shard has yet to deliver (retried by its alarm), per pool shard.", (s) => s.outbox),
  ];
}

/** Rows per tenant of a D1 index table; none when the table does not exist yet. */
async function countByTenant(sql: string): Promise<[Record<string, string>, number][]> {
  try {
    const rows = await kilnEnv().INDEX.prepare(sql).all<{ tenant: string; n: number; done?: number }>();
    return rows.results.map((r) => [{ tenant: r.tenant, ...(r.done === undefined ? {} : { done: String(Boolean(r.done)) }) }, r.n]);
  } catch (e) {
    if (/no such table/.test(String(e))) return [];
    throw e;
  }
}

/**
 * The D1 counts read every index row (D1 bills rows read), so each isolate refreshes them at most
 * this often. The value is kept, not the promise: workerd forbids awaiting another request's I/O.
 */
const INDEX_GAUGES_TTL_MS = 5 * 60_000;
let indexCache: { at: number; gauges: Gauge[] } | undefined;

async function cachedIndexGauges(): Promise<Gauge[]> {
  if (indexCache && Date.now() - indexCache.at < INDEX_GAUGES_TTL_MS) return indexCache.gauges;
  const gauges = await indexGauges();
  indexCache = { at: Date.now(), gauges };
  return gauges;
}

async function indexGauges(): Promise<Gauge[]> {
  const [invocations, operations] = await Promise.all([
    countByTenant(`SELECT tenant, COUNT(*) AS n FROM rs_invocations GROUP BY tenant`),
    countByTenant(`SELECT tenant, done, COUNT(*) AS n FROM operations GROUP BY tenant, done`),
  ]);
  return [
    { name: "kiln_resultstore_invocations", help: "ResultStore invocations in the search index, per tenant.", samples: invocations },
    { name: "kiln_operations", help: "Execution operations in the listing index (retained ones included), per tenant and done.", samples: operations },
  ];
}

/** The exposition text. */
export async function renderMetrics(): Promise<string> {
  const gauges = (await Promise.all([poolGauges(), cachedIndexGauges()])).flat();
  const out: string[] = [];
  out.push("# HELP kiln_isolate_start_time_seconds When this isolate started counting (the counters below are per isolate).");
  out.push("# TYPE kiln_isolate_start_time_seconds gauge");
  out.push(`kiln_isolate_start_time_seconds ${startedAt / 1000}`);
  renderCounters(out);
  out.push("# HELP kiln_request_duration_seconds Time to the answer (to the end of the body for streams).");
  out.push("# TYPE kiln_request_duration_seconds histogram");
  for (const [l, h] of latency) {
    BUCKETS.forEach((b, i) => out.push(`kiln_request_duration_seconds_bucket{${l},le="${b}"} ${h.counts[i]}`));
    out.push(`kiln_request_duration_seconds_bucket{${l},le="+Inf"} ${h.count}`);
    out.push(`kiln_request_duration_seconds_sum{${l}} ${h.sum}`);
    out.push(`kiln_request_duration_seconds_count{${l}} ${h.count}`);
  }
  for (const g of gauges) {
    out.push(`# HELP ${g.name} ${g.help}`, `# TYPE ${g.name} gauge`);
    for (const [l, v] of g.samples) out.push(`${g.name}{${labelText(l)}} ${v}`);
  }
  return out.join("\n") + "\n";
}
