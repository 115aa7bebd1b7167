// /metrics scrape time against the CAS size (`npm run bench:metrics`): the scrape reads every
// index shard of every tenant (CAS bytes and blobs per tenant), so it is timed on an empty CAS and
// again after BENCH_SCRAPE_BLOBS blobs (default 100,000) were stored through BatchUpdateBlobs, in
// the same stack and run. Printed: scrape p50/max at both sizes and their ratio, and the
// kiln_cas_blobs gauge the scrape reported (it must equal what was stored).
import { randomUUID } from "node:crypto";
import { startStack, type Stack } from "../test/e2e/stack.ts";
import { sha256 } from "./lib/data.ts";
import { now, percentile, pool } from "./lib/stats.ts";

const BLOBS = Number(process.env.BENCH_SCRAPE_BLOBS ?? 100_000);
const PER_CALL = 1000; // MAX_BATCH_ENTRIES
const SCRAPES = 7;

const t0 = now();
const log = (s: string) => process.stderr.write(`[bench-metrics ${((now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);

async function scrapes(stack: Stack): Promise<{ ms: number[]; blobs: number }> {
  const ms: number[] = [];
  let text = "";
  for (let i = 0; i < SCRAPES; i++) {
    const start = now();
    const res = await fetch(`${stack.httpUrl}/metrics`);
    text = await res.text();
    if (!res.ok) throw new Error(`/metrics answered ${res.status}: ${text}`);
    ms.push(now() - start);
  }
  const line = text.split("\n").find((l) => l.startsWith("kiln_cas_blobs{"));
  return { ms, blobs: line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0 };
}

async function seed(stack: Stack, n: number): Promise<void> {
  const salt = randomUUID();
  const calls = Array.from({ length: Math.ceil(n / PER_CALL) }, (_, c) => c);
  let done = 0;
  await pool(calls, 4, async (c) => {
    const requests = [];
    for (let i = c * PER_CALL; i < Math.min(n, (c + 1) * PER_CALL); i++) {
      const data = Buffer.from(`${salt}:${i}`);
      requests.push({ digest: { hash: sha256(data), sizeBytes: String(data.length) }, data: data.toString("base64") });
    }
    const res = await fetch(`${stack.httpUrl}/v2/blobs:batchUpdate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ requests }) });
    if (!res.ok) throw new Error(`batchUpdate answered ${res.status}: ${await res.text()}`);
    done += requests.length;
    if (c % 10 === 0) log(`${done} blobs stored`);
  });
}

const stack = await startStack();
try {
  const empty = await scrapes(stack);
  log(`empty CAS: scrape p50 ${percentile(empty.ms, 50).toFixed(1)} ms`);
  const seedStart = now();
  await seed(stack, BLOBS);
  log(`stored ${BLOBS} blobs in ${((now() - seedStart) / 1000).toFixed(1)} s`);
  const full = await scrapes(stack);
  const p50 = (xs: number[]) => percentile(xs, 50);
  console.log(
    [
      `/metrics scrape, ${SCRAPES} scrapes each, same stack and run:`,
      `  empty CAS:        p50 ${p50(empty.ms).toFixed(1)} ms, max ${Math.max(...empty.ms).toFixed(1)} ms`,
      `  ${BLOBS} blobs: p50 ${p50(full.ms).toFixed(1)} ms, max ${Math.max(...full.ms).toFixed(1)} ms (${(p50(full.ms) / p50(empty.ms)).toFixed(2)}x the empty scrape)`,
      `  kiln_cas_blobs reported: ${full.blobs} (stored ${BLOBS})`,
    ].join("\n"),
  );
  if (full.blobs !== BLOBS) process.exitCode = 1;
} finally {
  await stack.stop();
}
