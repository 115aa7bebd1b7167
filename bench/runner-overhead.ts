// The runner's own cost per trivial action (`npm run bench:runner`, not a test): a runner against
// the stand-in worker of the runner tests (test/runner/fake-worker.ts, in this process), one
// action at a time with a small input tree and `true` as the command. Reported from the runner's
// ExecutedActionMetadata: staging (fetch the tree and lay it out), spawn + run, upload (stdout,
// stderr, outputs), and the whole span from taking the assignment to having the result.
import { create, toBinary } from "@bufbuild/protobuf";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { DirectorySchema } from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { startRunner } from "../container/runner/runner.ts";
import type { SandboxMode } from "../container/runner/config.ts";
import { FakeWorker } from "../test/runner/fake-worker.ts";

const ACTIONS = Number(process.env.BENCH_ACTIONS ?? 50);
const INSTANCE = "bench";
const key = randomBytes(24).toString("hex");
const pd = (b: Uint8Array) => ({ hash: createHash("sha256").update(b).digest("hex"), sizeBytes: BigInt(b.byteLength) });
const ms = (t: { seconds: bigint; nanos: number } | undefined) => Number(t!.seconds) * 1000 + t!.nanos / 1e6;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

async function measure(sandbox: SandboxMode) {
  const worker = await FakeWorker.start({ runnerKey: key });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-bench-runner-"));
  await fs.chmod(dir, 0o711);
  const runner = await startRunner({ url: worker.url, token: key, id: "bench", slots: 1, sandbox, workDir: path.join(dir, "work"), cacheDir: path.join(dir, "cache") });
  const s = worker.socketOf("bench")!;
  // Ten small input files in two directories, the same for every action (cached after the first).
  const files = Array.from({ length: 5 }, (_, i) => {
    const b = Buffer.from(`input ${i}\n`);
    worker.putBlob(INSTANCE, b);
    return { name: `f${i}`, digest: pd(b) };
  });
  const sub = toBinary(DirectorySchema, create(DirectorySchema, { files }));
  worker.putBlob(INSTANCE, sub);
  const root = toBinary(DirectorySchema, create(DirectorySchema, { files, directories: [{ name: "sub", digest: pd(sub) }] }));
  worker.putBlob(INSTANCE, root);
  const rows: Record<"staging" | "run" | "upload" | "total", number[]> = { staging: [], run: [], upload: [], total: [] };
  for (let i = 0; i < ACTIONS + 3; i++) {
    const lease = worker.assign(s, {
      instanceName: INSTANCE,
      command: { arguments: ["true"], environmentVariables: [{ name: "PATH", value: "/usr/bin:/bin" }], outputFiles: ["out.txt"] },
      action: { inputRootDigest: pd(root) },
    });
    const done = await worker.until(() => lease.completes[0], 60_000);
    if (done.outcome.case !== "response") throw new Error(`action ${i} failed: ${JSON.stringify(done.outcome.value)}`);
    if (i < 3) continue; // warm-up: the file cache and the first bwrap start
    const m = done.outcome.value.result!.executionMetadata!;
    rows.staging.push(ms(m.inputFetchCompletedTimestamp) - ms(m.inputFetchStartTimestamp));
    rows.run.push(ms(m.executionCompletedTimestamp) - ms(m.executionStartTimestamp));
    rows.upload.push(ms(m.outputUploadCompletedTimestamp) - ms(m.outputUploadStartTimestamp));
    rows.total.push(ms(m.workerCompletedTimestamp) - ms(m.workerStartTimestamp));
  }
  await runner.close();
  await worker.stop();
  await fs.rm(dir, { recursive: true, force: true });
  const line = (Object.keys(rows) as (keyof typeof rows)[]).map((k) => `${k} p50 ${pct(rows[k], 50).toFixed(1)} ms p99 ${pct(rows[k], 99).toFixed(1)} ms`).join("; ");
  console.log(`runner (${runner.sandbox}, uid ${process.getuid?.() === 0 ? "61000+slot" : "own"}): ${ACTIONS} trivial actions: ${line}`);
}

await measure("auto");
await measure("none");
