// Remote-execution bench (`npm run bench:execution`, part of `npm run bench`): not a test.
// In one run, against the real stack (wrangler dev + bridge + one local runner):
//   1. the cold build of test/bazel executed remotely vs. the same build with
//      --spawn_strategy=local (wall-time ratio; both from a fresh output base, neither cached);
//   2. Execute round trip of a trivial action minus the command's own time (p50, p99), against
//      the transport's empty round trip (GetCapabilities through the bridge);
//   3. 100 identical Executes at once: how many runs they cost and how long they took;
//   4. DRAIN_ACTIONS (1,000) different trivial actions queued at once, drained by 4 runner slots
//      (the stack's runner and a `kiln runner` process, 2 slots each): actions per second.
// BENCH_EXEC_CALLS sets the number of round trips (default 60); BENCH_SKIP_BAZEL=1 skips part 1.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import {
  ActionSchema,
  CommandSchema,
  DirectorySchema,
  ExecuteResponseSchema,
  type ExecuteResponse,
} from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { WORKSPACE_DIR, bazelAvailable, disposeOutputBase, parseProcessSummary, runBazel } from "../test/e2e/bazel.ts";
import { connect, digestOf, grpc, unary, type Client, type Digest } from "../test/e2e/grpc-client.ts";
import { startStack, type Stack } from "../test/e2e/stack.ts";
import { fmt, now, percentile, table, type Row } from "./lib/stats.ts";

const CALLS = Number(process.env.BENCH_EXEC_CALLS) > 0 ? Number(process.env.BENCH_EXEC_CALLS) : 60;
const CONCURRENT = 100;
const DRAIN_ACTIONS = Number(process.env.BENCH_DRAIN_ACTIONS) > 0 ? Number(process.env.BENCH_DRAIN_ACTIONS) : 1000;
const INSTANCE = "bench/exec";
const PATH_ENV = "/usr/local/bin:/usr/bin:/bin";
const repo = fileURLToPath(new URL("../", import.meta.url));
const t0 = now();
const log = (s: string) => process.stderr.write(`[bench-exec ${((now() - t0) / 1000).toFixed(1).padStart(5)}s] ${s}\n`);

const definition = protoLoader.loadSync(["build/bazel/remote/execution/v2/remote_execution.proto"], {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [`${repo}proto`, `${repo}node_modules/google-proto-files`],
});
const reapi = (grpc.loadPackageDefinition(definition) as any).build.bazel.remote.execution.v2;

const pd = (b: Uint8Array) => ({ hash: digestOf(b).hash, sizeBytes: BigInt(b.byteLength) });
const ms = (t: { seconds: bigint; nanos: number } | undefined) => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : NaN);

/** Uploads an empty input root, `/bin/sh -c script` Commands and their Actions; returns the Actions' digests. */
async function putActions(cas: Client, scripts: string[], doNotCache: boolean): Promise<Digest[]> {
  const root = toBinary(DirectorySchema, create(DirectorySchema, {}));
  const out: Digest[] = [];
  for (let i = 0; i < scripts.length; i += 200) {
    const blobs: Uint8Array[] = [root];
    for (const script of scripts.slice(i, i + 200)) {
      const command = toBinary(CommandSchema, create(CommandSchema, { arguments: ["/bin/sh", "-c", script], environmentVariables: [{ name: "PATH", value: PATH_ENV }] }));
      const action = toBinary(ActionSchema, create(ActionSchema, { commandDigest: pd(command), inputRootDigest: pd(root), doNotCache }));
      blobs.push(command, action);
      out.push(digestOf(action));
    }
    const res = await unary(cas, "BatchUpdateBlobs", {
      instance_name: INSTANCE,
      requests: blobs.map((data) => ({ digest: digestOf(data), data: Buffer.from(data) })),
    });
    for (const r of res.responses) if ((r.status?.code ?? 0) !== 0) throw new Error(`upload: ${r.status.message}`);
  }
  return out;
}

const putAction = async (cas: Client, script: string, doNotCache: boolean) => (await putActions(cas, [script], doNotCache))[0]!;

interface Done {
  name: string;
  response: ExecuteResponse;
}

/** One Execute stream to its end: the final Operation's name and ExecuteResponse. */
function execute(execution: Client, digest: Digest, skipCacheLookup = false): Promise<Done> {
  return new Promise((resolve, reject) => {
    const call = execution.Execute({ instance_name: INSTANCE, action_digest: digest, skip_cache_lookup: skipCacheLookup });
    let last: any;
    call.on("data", (op: any) => (last = op));
    call.on("error", reject);
    call.on("end", () => {
      if (!last?.done || !last.response) return reject(new Error(`Execute ended without a done operation: ${JSON.stringify(last)}`));
      const response = fromBinary(ExecuteResponseSchema, last.response.value);
      if ((response.status?.code ?? 0) !== 0) return reject(new Error(`action failed: ${response.status?.message}`));
      resolve({ name: last.name, response });
    });
  });
}

async function bazelBuild(dir: string, flags: string[]): Promise<{ seconds: number; summary: string }> {
  const outputBase = path.join(dir, `ob-${randomUUID()}`);
  try {
    const s = now();
    const run = await runBazel(WORKSPACE_DIR, ["test", ...flags, "//..."], { outputBase, timeoutMs: 10 * 60_000 });
    const seconds = (now() - s) / 1000;
    if (run.code !== 0) throw new Error(`bazel ${flags.join(" ")} failed (exit ${run.code}):\n${run.stderr.slice(-3000)}`);
    const sum = parseProcessSummary(run.stderr);
    return { seconds, summary: Object.entries(sum.byKind).map(([k, v]) => `${v} ${k}`).join(", ") };
  } finally {
    await disposeOutputBase(WORKSPACE_DIR, outputBase);
  }
}

async function main() {
  const rows: Row[] = [];
  const notes: string[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-exec-"));
  let stack: Stack | undefined;
  try {
    log("starting the Kiln stack with a local runner");
    // No sandbox: part 3 counts runs by a file each run appends to outside its work dir.
    stack = await startStack({ runner: { sandbox: "none" } });
    const c = connect(stack.grpcTarget);
    const creds = grpc.credentials.createInsecure();
    const execution: Client = new reapi.Execution(stack.grpcTarget, creds);

    // 1. Bazel: remote vs. local, both cold (a fresh salt changes every action key).
    if (process.env.BENCH_SKIP_BAZEL === "1") notes.push("Bazel builds skipped (BENCH_SKIP_BAZEL=1)");
    else if (!bazelAvailable()) notes.push("Bazel builds skipped: bazel is not installed (apt-get install bazel-bootstrap)");
    else {
      const salt = randomUUID();
      const saltFlags = [`--action_env=SALT=${salt}`, `--host_action_env=SALT=${salt}`];
      log("cold Bazel build, --spawn_strategy=local");
      const local = await bazelBuild(tmp, [...saltFlags, "--spawn_strategy=local"]);
      log("cold Bazel build, remote execution");
      const remote = await bazelBuild(tmp, [
        ...saltFlags,
        `--remote_executor=grpc://${stack.grpcTarget}`,
        `--remote_instance_name=${INSTANCE}`,
        "--spawn_strategy=remote",
      ]);
      rows.push({ metric: "limit: cold build of test/bazel, --spawn_strategy=local", value: `${fmt(local.seconds)} s`, limit: "-", ratio: "-" });
      rows.push({
        metric: "cold build of test/bazel, remote execution",
        value: `${fmt(remote.seconds)} s`,
        limit: `local ${fmt(local.seconds)} s`,
        ratio: `${(remote.seconds / local.seconds).toFixed(2)}x`,
      });
      notes.push(`Bazel process summaries: local "${local.summary}"; remote "${remote.summary}"`);
    }

    // 2. Round trip of a trivial action. do_not_cache: every call runs (no cache, no merging).
    log(`${CALLS} sequential Executes of a trivial action`);
    const emptyMs: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const s = now();
      await unary(c.caps, "GetCapabilities", { instance_name: INSTANCE });
      emptyMs.push(now() - s);
    }
    const trivial = await putAction(c.cas, "true", true);
    await execute(execution, trivial); // warm-up: the runner's file cache, the isolates
    const totalMs: number[] = [];
    const overheadMs: number[] = [];
    const phases: Record<string, number[]> = { queue: [], inputs: [], run: [], outputs: [], "worker rest": [], "after worker": [] };
    for (let i = 0; i < CALLS; i++) {
      const s = now();
      const done = await execute(execution, trivial);
      const total = now() - s;
      const meta = done.response.result?.executionMetadata;
      const own = ms(meta?.executionCompletedTimestamp) - ms(meta?.executionStartTimestamp);
      if (!Number.isFinite(own)) throw new Error("ExecutedActionMetadata lacks execution timestamps");
      totalMs.push(total);
      overheadMs.push(total - own);
      // Where the time went, from ExecutedActionMetadata (worker clock; the worker and runner share it here).
      const m = meta!;
      const d = (a: typeof m.queuedTimestamp, b: typeof m.queuedTimestamp) => ms(b) - ms(a);
      phases.queue!.push(d(m.queuedTimestamp, m.workerStartTimestamp));
      phases.inputs!.push(d(m.inputFetchStartTimestamp, m.inputFetchCompletedTimestamp));
      phases.run!.push(own);
      phases.outputs!.push(d(m.outputUploadStartTimestamp, m.outputUploadCompletedTimestamp));
      phases["worker rest"]!.push(d(m.workerStartTimestamp, m.workerCompletedTimestamp) - phases.inputs!.at(-1)! - own - phases.outputs!.at(-1)!);
      phases["after worker"]!.push(total - d(m.queuedTimestamp, m.workerCompletedTimestamp));
    }
    const empty50 = percentile(emptyMs, 50);
    rows.push({ metric: "limit: GetCapabilities round trip (bridge + worker)", value: `p50 ${fmt(empty50)} ms`, limit: "-", ratio: "-" });
    for (const p of [50, 99]) {
      rows.push({
        metric: `Execute overhead, trivial action (minus its own run time) p${p}`,
        value: `${fmt(percentile(overheadMs, p))} ms`,
        limit: `empty p50 ${fmt(empty50)} ms`,
        ratio: `${(percentile(overheadMs, p) / empty50).toFixed(1)}x`,
      });
    }
    notes.push(`Execute phases, p50 ms: ${Object.entries(phases).map(([k, v]) => `${k} ${fmt(percentile(v, 50))}`).join(", ")} ` +
      `("queue": queued_timestamp to worker start; "after worker": the client's total minus queued-to-worker-completed, i.e. before queueing and after the run)`);
    notes.push(`Execute round trip including the command: p50 ${fmt(percentile(totalMs, 50))} ms, p99 ${fmt(percentile(totalMs, 99))} ms over ${CALLS} calls`);

    // 3. 100 identical Executes at once: each run appends a line to a trace file.
    log(`${CONCURRENT} identical concurrent Executes`);
    const trace = path.join(tmp, "runs");
    // A root runner runs actions as an unprivileged uid per slot: let it append to the trace.
    fs.chmodSync(tmp, 0o777);
    fs.writeFileSync(trace, "", { mode: 0o666 });
    fs.chmodSync(trace, 0o666);
    const shared = await putAction(c.cas, `echo $$ >> ${trace}; sleep 1`, false);
    const s = now();
    const results = await Promise.all(Array.from({ length: CONCURRENT }, () => execute(execution, shared)));
    const wall = now() - s;
    const runs = fs.readFileSync(trace, "utf8").trim().split("\n").filter(Boolean).length;
    const cached = results.filter((r) => r.response.cachedResult).length;
    const names = new Set(results.filter((r) => !r.response.cachedResult).map((r) => r.name)).size;
    rows.push({
      metric: `${CONCURRENT} identical concurrent Executes (1 s action): runs`,
      value: String(runs),
      limit: "1",
      ratio: `${runs.toFixed(2)}x`,
    });
    notes.push(`${CONCURRENT} identical Executes: done in ${fmt(wall)} ms; ${CONCURRENT - cached} shared ${names} operation(s), ${cached} were cache hits (arrived after the run)`);

    // 4. DRAIN_ACTIONS different trivial actions at once, 4 slots: the stack's runner (2) and one more (2).
    log(`${DRAIN_ACTIONS} different trivial actions queued at once, 4 runner slots`);
    const extra = await stack.spawnRunner({ slots: 2 });
    const many = await putActions(c.cas, Array.from({ length: DRAIN_ACTIONS }, (_, i) => `true drain-${i}`), true);
    const d0 = now();
    const drained = await Promise.all(many.map((d) => execute(execution, d)));
    const drainSeconds = (now() - d0) / 1000;
    const runMs = drained.map((r) => {
      const m = r.response.result!.executionMetadata!;
      return ms(m.executionCompletedTimestamp) - ms(m.executionStartTimestamp);
    });
    const busy = runMs.reduce((a, b) => a + b, 0) / 1000;
    rows.push({
      metric: `${DRAIN_ACTIONS} queued trivial actions drained by 4 runner slots`,
      value: `${fmt(DRAIN_ACTIONS / drainSeconds)} actions/s`,
      limit: `commands alone: ${fmt((4 * DRAIN_ACTIONS) / busy)}/s`,
      ratio: `${((DRAIN_ACTIONS / drainSeconds) / ((4 * DRAIN_ACTIONS) / busy)).toFixed(2)}x`,
    });
    notes.push(`drain: ${DRAIN_ACTIONS} actions in ${fmt(drainSeconds)} s; the commands themselves ran ${fmt(busy)} s in all (the limit column: 4 slots doing nothing but the commands)`);
    await extra.stop();
    c.close();
    execution.close();
  } finally {
    await stack?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  console.log(
    `\nKiln execution bench — ${new Date().toISOString()}, ${os.cpus().length} cores, Node ${process.version}; ` +
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
