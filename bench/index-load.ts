// CAS index load simulator (`npm run bench:index`): not a test. Starts the local stack (wrangler
// dev, fresh state) once per configuration, seeds a pool of present blobs, then drives N virtual
// Bazel clients, each calling FindMissingBlobs (Connect JSON, straight to the worker) with 200
// digests, 90% from the pool and 10% never stored, back to back; after one call in ten it
// uploads two of the missing blobs (BatchUpdateBlobs), which also joins them to the pool.
//
// Requests per index object are counted inside each CasIndexDO (requests served, digests looked
// up, rows written since it was loaded) and read through GET /admin/cas-index before and after
// each phase; FindMissing latency is measured here, end to end (with up to 256 sockets, so at
// 1,000 clients it includes waiting for a socket). Rows written are billed rows: an insert also
// writes its primary-key index entry, so a new blob counts 2, a touch 1. An object reloaded
// during a phase loses what it served before (the "objects reloaded" column says so).
//
// Configurations: "before" is the index as it was (touch on every call, no existence cache),
// "after" the defaults, "after-64" the defaults with 64 shards. Knobs: BENCH_CONFIGS
// (comma-separated names), BENCH_CLIENTS (default "100,1000"), BENCH_SECONDS per phase (15),
// BENCH_POOL (present blobs seeded, 20000).
import { createHash, randomUUID } from "node:crypto";
import http from "node:http";
import os from "node:os";
import { startStack, type Stack } from "../test/e2e/stack.ts";
import { fmt, now, percentile } from "./lib/stats.ts";

const envNum = (name: string, dflt: number) => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : dflt;
};

const CONFIGS: Record<string, Record<string, string>> = {
  before: { CAS_TOUCH_INTERVAL_SECONDS: "0", CAS_EXISTENCE_CACHE_SECONDS: "0" },
  after: {},
  "after-64": { CAS_INDEX_SHARDS: "64" },
};
const chosen = (process.env.BENCH_CONFIGS ?? "before,after").split(",").map((s) => s.trim());
const CLIENTS = (process.env.BENCH_CLIENTS ?? "100,1000").split(",").map(Number);
const SECONDS = envNum("BENCH_SECONDS", 15);
const POOL = envNum("BENCH_POOL", 20_000);
const DIGESTS_PER_CALL = 200;
const MISSING_PER_CALL = 20;
const UPLOAD_EVERY = 10;
const FIND_MISSING = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs";
const BATCH_UPDATE = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs";

const t0 = now();
const log = (s: string) => process.stderr.write(`[bench:index ${((now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);

interface Blob {
  hash: string;
  sizeBytes: string;
  data: Buffer;
}
const blob = (text: string): Blob => {
  const data = Buffer.from(text);
  return { hash: createHash("sha256").update(data).digest("hex"), sizeBytes: String(data.byteLength), data };
};

function postJson(agent: http.Agent, url: string, body: unknown): Promise<any> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": payload.byteLength } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) reject(new Error(`POST ${url}: HTTP ${res.statusCode} ${text.slice(0, 300)}`));
        else resolve(JSON.parse(text));
      });
    });
    req.on("error", reject);
    req.end(payload);
  });
}

const upload = (agent: http.Agent, stack: Stack, blobs: Blob[]) =>
  postJson(agent, stack.httpUrl + BATCH_UPDATE, {
    requests: blobs.map((b) => ({ digest: { hash: b.hash, sizeBytes: b.sizeBytes }, data: b.data.toString("base64") })),
  });

interface ObjectStats {
  shard: number;
  since: number;
  requests: number;
  digests: number;
  rowsWritten: number;
}

async function indexStats(stack: Stack): Promise<ObjectStats[]> {
  const out: ObjectStats[] = [];
  for (let from: number | undefined = 0; from !== undefined; ) {
    const res = await fetch(`${stack.httpUrl}/admin/cas-index?from=${from}`);
    const body = (await res.json()) as { objects: ObjectStats[]; next?: number };
    out.push(...body.objects);
    from = body.next;
  }
  return out;
}

/** What each object served between two readings (from 0 if it was reloaded in between). */
function served(a: ObjectStats[], b: ObjectStats[]) {
  return b.map((o) => {
    const old = a.find((x) => x.shard === o.shard && x.since === o.since);
    return {
      reloaded: !old,
      requests: o.requests - (old?.requests ?? 0),
      digests: o.digests - (old?.digests ?? 0),
      rowsWritten: o.rowsWritten - (old?.rowsWritten ?? 0),
    };
  });
}

interface PhaseResult {
  config: string;
  clients: number;
  calls: number;
  callsPerS: number;
  p50: number;
  p99: number;
  shards: number;
  perObjectMax: number;
  perObjectMean: number;
  rowsWrittenPerCall: number;
  indexDigestsShare: number;
  /** Objects reloaded during the phase: what they served before it is not counted. */
  reloaded: number;
  errors: number;
}

async function phase(config: string, stack: Stack, pool: Blob[], clients: number): Promise<PhaseResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Math.min(clients, 256) });
  const latencies: number[] = [];
  let errors = 0;
  let firstError: unknown;
  let sent = 0;
  const before = await indexStats(stack);
  const start = now();
  const end = start + SECONDS * 1000;
  const client = async (id: number) => {
    for (let i = 0; now() < end; i++) {
      const fresh = Array.from({ length: MISSING_PER_CALL }, () => blob(`index-load missing ${randomUUID()}`));
      const known = Array.from({ length: DIGESTS_PER_CALL - MISSING_PER_CALL }, () => pool[Math.floor(Math.random() * pool.length)]!);
      const t = now();
      try {
        const res = await postJson(agent, stack.httpUrl + FIND_MISSING, {
          blobDigests: [...known, ...fresh].map((b) => ({ hash: b.hash, sizeBytes: b.sizeBytes })),
        });
        latencies.push(now() - t);
        sent += DIGESTS_PER_CALL;
        const missing = new Set(((res.missingBlobDigests ?? []) as { hash: string }[]).map((d) => d.hash));
        if ((i + id) % UPLOAD_EVERY === 0) {
          const up = fresh.filter((b) => missing.has(b.hash)).slice(0, 2);
          await upload(agent, stack, up);
          pool.push(...up);
        }
      } catch (e) {
        errors++;
        firstError ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, id) => client(id)));
  const seconds = (now() - start) / 1000;
  const after = await indexStats(stack);
  agent.destroy();
  if (firstError) log(`${config} x${clients}: ${errors} failed calls, first: ${String(firstError)}`);
  const perObject = served(before, after).map((s) => ({ ...s, perS: s.requests / seconds }));
  const rates = perObject.map((o) => o.perS);
  const calls = latencies.length;
  return {
    config,
    clients,
    calls,
    callsPerS: calls / seconds,
    p50: calls ? percentile(latencies, 50) : NaN,
    p99: calls ? percentile(latencies, 99) : NaN,
    shards: perObject.length,
    perObjectMax: Math.max(...rates),
    perObjectMean: rates.reduce((a, b) => a + b, 0) / rates.length,
    rowsWrittenPerCall: perObject.reduce((a, o) => a + o.rowsWritten, 0) / Math.max(1, calls),
    indexDigestsShare: perObject.reduce((a, o) => a + o.digests, 0) / Math.max(1, sent),
    reloaded: perObject.filter((o) => o.reloaded).length,
    errors,
  };
}

let running: Stack | undefined;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => void (running?.stop() ?? Promise.resolve()).finally(() => process.exit(130)));
}

async function run(config: string): Promise<PhaseResult[]> {
  log(`${config}: starting the stack with ${JSON.stringify(CONFIGS[config])}`);
  const stack = (running = await startStack({ vars: { ACCESS_LOG: "false", ...CONFIGS[config] } }));
  try {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const runId = randomUUID();
    const pool = Array.from({ length: POOL }, (_, i) => blob(`index-load present ${runId} ${i}`));
    for (let i = 0; i < pool.length; i += 1000) await upload(agent, stack, pool.slice(i, i + 1000));
    agent.destroy();
    log(`${config}: seeded ${pool.length} blobs`);
    const results: PhaseResult[] = [];
    for (const clients of CLIENTS) {
      log(`${config}: ${clients} virtual clients for ${SECONDS} s`);
      results.push(await phase(config, stack, pool, clients));
    }
    return results;
  } finally {
    running = undefined;
    await stack.stop();
  }
}

const rows: PhaseResult[] = [];
for (const c of chosen) {
  if (!CONFIGS[c]) throw new Error(`unknown configuration "${c}" (known: ${Object.keys(CONFIGS).join(", ")})`);
  rows.push(...(await run(c)));
}

const head = ["config", "clients", "FindMissing/s", "p50 ms", "p99 ms", "objects", "req/s per object max", "mean", "index rows written per call", "digests reaching the index", "objects reloaded", "errors"];
const lines = rows.map((r) => [
  r.config,
  String(r.clients),
  fmt(r.callsPerS),
  fmt(r.p50),
  fmt(r.p99),
  String(r.shards),
  fmt(r.perObjectMax),
  fmt(r.perObjectMean),
  fmt(r.rowsWrittenPerCall),
  `${(100 * r.indexDigestsShare).toFixed(1)}%`,
  String(r.reloaded),
  String(r.errors),
]);
const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
const fmtLine = (l: string[]) => l.map((c, i) => (i < 1 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(" | ");
console.log(`\nCAS index load: ${DIGESTS_PER_CALL} digests per FindMissing (${MISSING_PER_CALL} never stored), ${SECONDS} s per phase, ` +
  `${os.cpus().length} CPUs, load average ${os.loadavg()[0]!.toFixed(1)}\n`);
console.log(fmtLine(head));
console.log(w.map((n) => "-".repeat(n)).join("-|-"));
for (const l of lines) console.log(fmtLine(l));
