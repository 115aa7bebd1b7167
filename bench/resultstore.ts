// ResultStore bench (`npm run bench:resultstore`, part of `npm run bench`): not a test. Against the
// real stack, through the gRPC bridge with grpc-js:
//   1. UploadBatch throughput for the load-test invocation (5,000 targets x 2 configured targets
//      x 1 action, 10 MiB batches): resources/s and ms per batch, against an empty UploadBatch
//      (a Touch: the round trip, the token checks and the alarm, without resources);
//   2. list-page latency (1,000 resources a page, wildcard ListActions and ListConfiguredTargets)
//      p50/p99, against GetInvocationDownloadMetadata (a round trip to the same object, no rows).
// BENCH_RS_TARGETS scales the invocation (default 5000).
import { randomUUID } from "node:crypto";
import os from "node:os";
import { call, listAll, resultStoreClients, token, uploadInvocation } from "../test/e2e/resultstore-load.ts";
import { startStack, type Stack } from "../test/e2e/stack.ts";
import { fmt, now, percentile, table, type Row } from "./lib/stats.ts";

const TARGETS = Number(process.env.BENCH_RS_TARGETS) > 0 ? Number(process.env.BENCH_RS_TARGETS) : 5_000;
const ROUND_TRIPS = 30;
const t0 = now();
const log = (s: string) => process.stderr.write(`[bench-rs ${((now() - t0) / 1000).toFixed(1).padStart(5)}s] ${s}\n`);

async function main() {
  const rows: Row[] = [];
  const notes: string[] = [];
  let stack: Stack | undefined;
  try {
    log("starting the Kiln stack");
    stack = await startStack();
    const { upload, download, close } = resultStoreClients(stack.grpcTarget);
    const tok = randomUUID();
    const inv = await call(upload, "CreateInvocation", { invocation_id: randomUUID(), authorization_token: tok, initial_resume_token: token(0), invocation: {} });

    // The limit for uploads: empty batches (each moves the resume token on).
    const emptyMs: number[] = [];
    for (let n = 1; n <= ROUND_TRIPS; n++) {
      const s = now();
      await call(upload, "UploadBatch", { parent: inv.name, authorization_token: tok, resume_token: token(n - 1), next_resume_token: token(n), upload_requests: [] });
      emptyMs.push(now() - s);
    }
    // Back to the start of the numbering the uploader expects: a fresh invocation.
    const inv2 = await call(upload, "CreateInvocation", { invocation_id: randomUUID(), authorization_token: tok, initial_resume_token: token(0), invocation: {} });
    log(`uploading ${TARGETS} targets x 2 x 1`);
    const batchMs: number[] = [];
    let last = now();
    const s = now();
    const p = await uploadInvocation(upload, inv2.name, tok, TARGETS, () => {
      batchMs.push(now() - last);
      last = now();
    });
    const seconds = (now() - s) / 1000;
    const empty50 = percentile(emptyMs, 50);
    rows.push({ metric: "limit: empty UploadBatch round trip", value: `p50 ${fmt(empty50)} ms`, limit: "-", ratio: "-" });
    rows.push({ metric: `UploadBatch, ${p.resources} resources in ${p.batches} batches`, value: `${fmt(p.resources / seconds)} resources/s`, limit: "-", ratio: "-" });
    rows.push({
      metric: "UploadBatch, time per 10 MiB batch (median)",
      value: `${fmt(percentile(batchMs, 50))} ms`,
      limit: `empty p50 ${fmt(empty50)} ms`,
      ratio: `${(percentile(batchMs, 50) / empty50).toFixed(0)}x`,
    });
    notes.push(`upload: ${fmt(p.bytes / 1e6 / seconds)} MB/s of resource payload (~${fmt(p.bytes / 1e6)} MB), ${fmt(seconds)} s in all`);

    // List pages.
    log("reading back page by page");
    const mdMs: number[] = [];
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const t = now();
      await call(download, "GetInvocationDownloadMetadata", { name: `${inv2.name}/downloadMetadata` });
      mdMs.push(now() - t);
    }
    const pageMs: number[] = [];
    const actions = await listAll(download, "ListActions", `${inv2.name}/targets/-/configuredTargets/-`, "actions", "id,files", 1000, (ms) => pageMs.push(ms));
    const cts = await listAll(download, "ListConfiguredTargets", `${inv2.name}/targets/-`, "configured_targets", "id,status_attributes", 1000, (ms) => pageMs.push(ms));
    if (actions.length !== TARGETS * 2 || cts.length !== TARGETS * 2) throw new Error(`read back ${actions.length} actions, ${cts.length} configured targets`);
    const md50 = percentile(mdMs, 50);
    rows.push({ metric: "limit: GetInvocationDownloadMetadata round trip", value: `p50 ${fmt(md50)} ms`, limit: "-", ratio: "-" });
    for (const q of [50, 99]) {
      rows.push({
        metric: `list page of 1,000 (ListActions/ListConfiguredTargets, wildcards) p${q}`,
        value: `${fmt(percentile(pageMs, q))} ms`,
        limit: `empty p50 ${fmt(md50)} ms`,
        ratio: `${(percentile(pageMs, q) / md50).toFixed(1)}x`,
      });
    }
    notes.push(`${pageMs.length} list pages read; p99 is nearest-rank`);
    close();
  } finally {
    await stack?.stop();
  }
  console.log(
    `\nKiln ResultStore bench — ${new Date().toISOString()}, ${os.cpus().length} cores, Node ${process.version}; ` +
      `load average (1 min) ${os.loadavg()[0]!.toFixed(2)}: other work on this machine skews every number.\n`,
  );
  console.log(table(rows));
  console.log("\n" + notes.map((n) => `- ${n}`).join("\n"));
}

try {
  await main();
} catch (e) {
  process.stderr.write(`bench failed: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
}
