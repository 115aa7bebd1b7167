// Storage bench (`npm run bench:storage`): not a test. Against the real stack (wrangler dev):
//   1. eviction throughput: BENCH_EVICT_BLOBS small blobs (default 20,000) spread over the 16
//      index shards of one tenant, then `POST /admin/cas/evict?idle_seconds=0` until done; blobs
//      evicted per second, in total and per shard (the shards evict in parallel);
//   2. FindMissingBlobs latency (200 digests a call, 4 callers) p50/p99 on a quiet index for 10 s,
//      and for the calls started while that eviction runs.
// Locally, the worker, its Durable Objects and the R2 simulator share one workerd process, so
// R2's deletes (files on disk) compete with FindMissing for it; deployed, R2 is a separate service.
import { createHash, randomUUID } from "node:crypto";
import { startStack, type Stack } from "../test/e2e/stack.ts";
import { fmt, now, percentile, pool, table, type Row } from "./lib/stats.ts";

const BLOBS = Number(process.env.BENCH_EVICT_BLOBS) > 0 ? Number(process.env.BENCH_EVICT_BLOBS) : 20_000;
const SHARDS = 16;
const FIND_BATCH = 200;
const CALLERS = 4;
const t0 = now();
const log = (s: string) => process.stderr.write(`[bench-storage ${((now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);

interface Digest {
  hash: string;
  sizeBytes: string;
}

const CAS = "build.bazel.remote.execution.v2.ContentAddressableStorage";

async function connect(stack: Stack, method: string, body: unknown): Promise<any> {
  const res = await fetch(`${stack.httpUrl}/${CAS}/${method}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${method}: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

async function admin(stack: Stack, path: string): Promise<any> {
  const res = await fetch(`${stack.httpUrl}${path}`, { method: "POST" });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

/**
 * FindMissing calls from CALLERS callers, each starting a call while `running()`; their latencies
 * (ms). A call that starts during the window counts in full, however long it takes.
 */
async function findMissingWhile(stack: Stack, digests: Digest[], running: () => boolean): Promise<number[]> {
  const ms: number[] = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (running()) {
        const start = (i++ * FIND_BATCH) % Math.max(1, digests.length - FIND_BATCH);
        const s = now();
        await connect(stack, "FindMissingBlobs", { blobDigests: digests.slice(start, start + FIND_BATCH) });
        ms.push(now() - s);
      }
    }),
  );
  return ms;
}

async function main() {
  const rows: Row[] = [];
  let stack: Stack | undefined;
  try {
    log("starting the Kiln stack");
    stack = await startStack({ vars: { CAS_MIN_LIFETIME_HOURS: "0" } });
    const s = stack;
    const tag = randomUUID();
    const blobs = Array.from({ length: BLOBS }, (_, i) => Buffer.from(`${tag}/${i}`.padEnd(64, ".")));
    const digests: Digest[] = blobs.map((b) => ({ hash: createHash("sha256").update(b).digest("hex"), sizeBytes: String(b.length) }));
    log(`uploading ${BLOBS} blobs`);
    const batches = Array.from({ length: Math.ceil(BLOBS / 500) }, (_, i) => i);
    await pool(batches, 4, async (i) => {
      const requests = blobs.slice(i * 500, i * 500 + 500).map((b, j) => ({ digest: digests[i * 500 + j], data: b.toString("base64") }));
      await connect(s, "BatchUpdateBlobs", { requests });
    });

    log("FindMissing on a quiet index");
    const quietStart = now();
    const quiet = await findMissingWhile(s, digests, () => now() - quietStart < 10_000);

    log("evicting everything (idle_seconds=0) while FindMissing runs");
    let evicting = true;
    let evicted = 0;
    const evictStart = now();
    const during = findMissingWhile(s, digests, () => evicting);
    // The control: a request that touches neither the index nor R2.
    const healthz = (async () => {
      const ms: number[] = [];
      while (evicting) {
        const t = now();
        await (await fetch(`${s.httpUrl}/healthz`)).text();
        ms.push(now() - t);
      }
      return ms;
    })();
    let steps = 0;
    for (;;) {
      const r = await admin(s, "/admin/cas/evict?idle_seconds=0");
      steps++;
      evicted += r.evicted;
      if (!r.more) break;
    }
    const evictMs = now() - evictStart;
    evicting = false;
    const busy = await during;
    const health = await healthz;
    const stats = (await (await fetch(`${s.httpUrl}/admin/cas/stats`)).json()) as { tenants: { blobs: number }[] };
    log(`evicted ${evicted} in ${steps} rounds, ${fmt(evictMs)} ms; ${stats.tenants[0].blobs} blobs left`);

    const perSec = evicted / (evictMs / 1000);
    rows.push({ metric: `eviction: blobs evicted (of ${BLOBS})`, value: String(evicted), limit: "", ratio: "" });
    rows.push({ metric: "eviction: blobs/s, all 16 shards", value: fmt(perSec), limit: "", ratio: "" });
    rows.push({ metric: "eviction: blobs/s per shard", value: fmt(perSec / SHARDS), limit: "", ratio: "" });
    for (const [name, xs] of [["quiet", quiet], ["during eviction", busy]] as const) {
      rows.push({ metric: `FindMissing ${FIND_BATCH} digests p50 ms, ${name} (${xs.length} calls)`, value: fmt(percentile(xs, 50)), limit: "", ratio: "" });
      rows.push({ metric: `FindMissing ${FIND_BATCH} digests p99 ms, ${name}`, value: fmt(percentile(xs, 99)), limit: "", ratio: "" });
    }
    rows.push({ metric: `GET /healthz p99 ms during eviction (control, ${health.length} calls)`, value: fmt(percentile(health, 99)), limit: "", ratio: "" });
    const q99 = percentile(quiet, 99);
    rows.push({ metric: "FindMissing p99 during eviction / quiet", value: fmt(percentile(busy, 99) / q99), limit: "", ratio: "" });
    console.log(table(rows));
  } finally {
    await stack?.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
