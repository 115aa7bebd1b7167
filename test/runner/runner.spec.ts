// The action runner (container/runner) against a stand-in worker (fake-worker.ts): it connects out
// to the pool, takes Assignments, stages inputs from the CAS with its lease token, runs the command,
// uploads outputs and reports with RunnerService.Complete. Covers the protocol (Hello, shards,
// Accepted/Refused/Ready, heartbeats, Cancel, reconnects, Complete retries, live output), staging
// (nested directories, executable bits, symlinks, the file cache), isolation between actions,
// symlink escapes, input bounds, working_directory, environment, both output styles, canonical
// Trees, exit codes, stdout/stderr, timeouts and the CLI entry.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Command_OutputDirectoryFormat,
  DirectorySchema,
  TreeSchema,
  type ActionResult,
  type Digest,
  type Directory,
  type ExecuteResponse,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import type { Status } from "../../src/gen/google/rpc/status_pb.ts";
import { Phase } from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { startRunner, type Runner, type StartOptions } from "../../container/runner/runner.ts";
import { FakeWorker, type PoolSocket } from "./fake-worker.ts";
import { tcpSockets } from "./listening-sockets.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const INSTANCE = "spec/runner";
const PATH_ENV = "/usr/local/bin:/usr/bin:/bin";
const KEY = randomBytes(24).toString("base64url");
const RUNNER_ID = "spec";

let worker: FakeWorker;
let runner: Runner;
let scratch: string;
let workDir: string;
let cacheDir: string;
const extra: Runner[] = [];
/** KILN_TEST_LOG=1 prints what the runners say. */
const log = process.env.KILN_TEST_LOG ? (line: string) => console.error(`[runner] ${line}`) : undefined;

/** Another runner on the same fake worker, closed after the file. */
async function another(id: string, o: Partial<StartOptions> = {}, on = worker): Promise<Runner> {
  const r = await startRunner({
    url: on.url,
    token: KEY,
    id,
    slots: 1,
    workDir: path.join(scratch, `work-${id}`),
    cacheDir: path.join(scratch, `cache-${id}`),
    killGraceMs: 500,
    log,
    ...o,
  });
  extra.push(r);
  return r;
}

beforeAll(async () => {
  worker = await FakeWorker.start({ runnerKey: KEY, shardCount: 2, heartbeatMs: 300 });
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-runner-spec-"));
  // Searchable: when the runner is root, actions run as other uids and must reach their work dirs.
  await fs.chmod(scratch, 0o711);
  workDir = path.join(scratch, "work");
  cacheDir = path.join(scratch, "cache");
  runner = await startRunner({ url: worker.url, token: KEY, id: RUNNER_ID, slots: 4, workDir, cacheDir, killGraceMs: 1000, log });
});

afterAll(async () => {
  for (const r of [runner, ...extra]) await r?.close();
  await worker?.stop();
  if (scratch) await fs.rm(scratch, { recursive: true, force: true });
});

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const protoDigest = (b: Uint8Array) => ({ hash: sha256(b), sizeBytes: BigInt(b.byteLength) });

function blob(d: Digest | undefined, instance = INSTANCE, on = worker): Buffer {
  expect(d).toBeDefined();
  const bytes = on.getBlob(instance, d);
  expect(bytes, `blob ${d!.hash}/${d!.sizeBytes}`).toBeDefined();
  expect(sha256(bytes!)).toBe(d!.hash);
  return bytes!;
}
const text = (d: Digest | undefined, instance = INSTANCE) => blob(d, instance).toString("utf8");

// ---- input trees ----

/** A file (string or bytes), an executable file, a symlink, or a directory of them. */
type Entry = string | Buffer | { exec: string | Buffer } | { symlink: string } | { missing: string } | Spec;
interface Spec {
  [name: string]: Entry;
}

const isSpec = (e: Entry): e is Spec =>
  typeof e === "object" && !Buffer.isBuffer(e) && !("exec" in e) && !("symlink" in e) && !("missing" in e);
const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Stores the tree (except `missing` files) in the fake CAS and returns its root Directory's bytes. */
function putTree(spec: Spec, instance = INSTANCE, on = worker): Uint8Array {
  const dir = { files: [] as object[], directories: [] as object[], symlinks: [] as object[] } as Required<Pick<Directory, "files" | "directories" | "symlinks">>;
  for (const [name, e] of Object.entries(spec)) {
    if (isSpec(e)) {
      (dir.directories as object[]).push({ name, digest: protoDigest(putTree(e, instance, on)) });
    } else if (typeof e === "object" && "symlink" in e) {
      (dir.symlinks as object[]).push({ name, target: (e as { symlink: string }).symlink });
    } else if (typeof e === "object" && "missing" in e) {
      (dir.files as object[]).push({ name, digest: protoDigest(Buffer.from((e as { missing: string }).missing)) });
    } else {
      const exec = typeof e === "object" && !Buffer.isBuffer(e) && "exec" in e;
      const content = exec ? (e as { exec: string | Buffer }).exec : (e as string | Buffer);
      const bytes = typeof content === "string" ? Buffer.from(content) : content;
      if (bytes.byteLength > 0) on.putBlob(instance, bytes);
      (dir.files as object[]).push({ name, digest: protoDigest(bytes), isExecutable: exec });
    }
  }
  for (const list of [dir.files, dir.directories, dir.symlinks] as { name: string }[][]) list.sort(byName);
  const bytes = toBinary(DirectorySchema, create(DirectorySchema, dir as never));
  on.putBlob(instance, bytes);
  return bytes;
}

/** The Command fields these tests set. */
interface CommandInit {
  arguments: string[];
  environmentVariables?: { name: string; value: string }[];
  outputFiles?: string[];
  outputDirectories?: string[];
  outputPaths?: string[];
  workingDirectory?: string;
  outputDirectoryFormat?: Command_OutputDirectoryFormat;
  outputNodeProperties?: string[];
  platform?: { properties: { name: string; value: string }[] };
}

interface ActionSpec {
  command: CommandInit;
  inputs?: Spec;
  instance?: string;
}

const bash = (script: string, extra: Partial<CommandInit> = {}): CommandInit => ({
  arguments: ["bash", "-c", script],
  environmentVariables: [{ name: "PATH", value: PATH_ENV }],
  ...extra,
});

interface Executed {
  response?: ExecuteResponse;
  result?: ActionResult;
  /** status.code of the response (0: OK). */
  code?: number;
  error?: Status;
  leaseId: string;
}

/** Assigns the action on `to` (default: the main runner's shard 0) without waiting. */
function assign(a: ActionSpec, o: { timeoutMs?: number; to?: PoolSocket; on?: FakeWorker } = {}) {
  const on = o.on ?? worker;
  const instance = a.instance ?? INSTANCE;
  const root = putTree(a.inputs ?? {}, instance, on);
  const to = o.to ?? on.socketOf(RUNNER_ID)!;
  return on.assign(to, { instanceName: instance, command: a.command, action: { inputRootDigest: protoDigest(root) }, timeoutMs: o.timeoutMs });
}

async function completion(lease: ReturnType<typeof assign>, on = worker): Promise<Executed> {
  const req = await on.until(() => lease.completes[0], 60_000);
  const o = req.outcome;
  if (o.case === "response") return { response: o.value, result: o.value.result, code: o.value.status?.code ?? 0, leaseId: lease.id };
  if (o.case === "error") return { error: o.value, leaseId: lease.id };
  throw new Error("Complete without an outcome");
}

const run = (a: ActionSpec, o: Parameters<typeof assign>[1] = {}) => completion(assign(a, o), o.on);

const missingOf = (s: Status | undefined) =>
  (s?.details ?? []).flatMap((d) => anyUnpack(d, PreconditionFailureSchema)?.violations.map((v) => v.subject) ?? []);

/** The Tree of an output directory, checked to be canonical: decoding and re-encoding changes no byte. */
function treeOf(result: ActionResult, p: string) {
  const out = result.outputDirectories.find((d) => d.path === p);
  expect(out, `output directory ${p}`).toBeDefined();
  const bytes = blob(out!.treeDigest);
  const tree = fromBinary(TreeSchema, bytes);
  expect(Buffer.from(toBinary(TreeSchema, tree)).equals(bytes)).toBe(true);
  const byDigest = new Map<string, Directory>();
  for (const d of [tree.root!, ...tree.children]) {
    // What Bazel does: re-encode each Directory and look it up by the digest its parent names.
    byDigest.set(sha256(toBinary(DirectorySchema, d)), d);
    for (const list of [d.files, d.directories, d.symlinks]) {
      const names = list.map((n) => n.name);
      expect(names).toEqual([...names].sort());
    }
  }
  for (const d of byDigest.values()) for (const sub of d.directories) expect(byDigest.has(sub.digest!.hash), sub.name).toBe(true);
  return { out: out!, tree, byDigest, sub: (d: Directory, name: string) => byDigest.get(d.directories.find((x) => x.name === name)!.digest!.hash)! };
}

const ms = (t: { seconds: bigint; nanos: number } | undefined) => Number(t!.seconds) * 1000 + t!.nanos / 1e6;

/** Whether a process still runs (a zombie waiting for its new parent to reap it does not). */
async function alive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

async function eventually(check: () => Promise<boolean>, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** CI (root, bubblewrap installed by .ci/run) must run every test; elsewhere a test may skip, saying why. */
function skipOutsideCi(ctx: { skip(note?: string): void }, why: string) {
  const ci = process.env.CI ?? "";
  if (ci !== "" && ci !== "0" && ci.toLowerCase() !== "false") throw new Error(`required in CI: ${why}`);
  console.warn(`[runner.spec] skipped: ${why}`);
  ctx.skip(why);
}

describe("the pool connection", () => {
  it("dials every shard with the same Hello and listens on no port", async () => {
    const s0 = worker.socketOf(RUNNER_ID, 0)!;
    const s1 = await worker.until(() => worker.socketOf(RUNNER_ID, 1));
    expect(s0).toBeDefined();
    expect(s1).toBeDefined();
    for (const s of [s0, s1]) {
      expect(s.hello.runnerId).toBe(RUNNER_ID);
      expect(s.hello.slots).toBe(4);
      expect(s.hello.version).toMatch(/^kiln-runner\//);
      const props = s.hello.properties.map((p) => `${p.name}=${p.value}`);
      expect(props).toContain("OSFamily=linux");
      expect(props).toContain(`ISA=${os.arch() === "arm64" ? "arm-a64" : "x86-64"}`);
    }
    // This process is the runner: it holds its connections to the pool, and listens on nothing.
    const own = tcpSockets(process.pid);
    expect(own.filter((s) => !s.listening).length).toBeGreaterThan(0);
    const fakeWorkerPort = new URL(worker.url).port;
    const listening = own.filter((s) => s.listening && Number.parseInt(s.local.split(":")[1]!, 16) !== Number(fakeWorkerPort));
    expect(listening).toEqual([]);
  });

  it("refuses to start with a key the worker does not accept", async () => {
    await expect(startRunner({ url: worker.url, token: "not-the-key", workDir: path.join(scratch, "w-bad"), cacheDir: path.join(scratch, "c-bad") })).rejects.toThrow(
      /refused the runner key \(HTTP 401\)/,
    );
    expect(worker.refusals).toContain("pool: Bearer not-the-key");
  });

  it("answers Accepted, renews the lease with heartbeats naming the phase, and completes with the lease token", async () => {
    const to = worker.socketOf(RUNNER_ID, 1)!;
    const lease = assign({ command: bash("echo started; sleep 2; echo done") }, { to });
    await worker.until(() => worker.received(to, "heartbeat").some((h) => h.running.some((p) => p.leaseId === lease.id && p.phase === Phase.RUNNING)));
    expect(worker.received(to, "accepted").map((a) => a.leaseId)).toContain(lease.id);
    // Heartbeats go on the connection that assigned the action only.
    const s0 = worker.socketOf(RUNNER_ID, 0)!;
    expect(worker.received(s0, "heartbeat").some((h) => h.running.some((p) => p.leaseId === lease.id))).toBe(false);
    const r = await completion(lease);
    expect(r.code).toBe(0);
    expect(text(r.result!.stdoutDigest)).toBe("started\ndone\n");
    expect(worker.refusals.filter((x) => !x.startsWith("pool:"))).toEqual([]);
  });

  it("refuses work beyond its slots across all shards, then says Ready on the refusing shard", async () => {
    const small = await another("small", { slots: 1 });
    const s0 = worker.socketOf("small", 0)!;
    const s1 = await worker.until(() => worker.socketOf("small", 1));
    const busy = assign({ command: bash("sleep 30") }, { to: s0 });
    await worker.until(() => worker.received(s0, "accepted").some((a) => a.leaseId === busy.id));
    const extraLease = assign({ command: bash("echo never") }, { to: s1 });
    const refused = await worker.until(() => worker.received(s1, "refused").find((r) => r.leaseId === extraLease.id));
    expect(refused.freeSlots).toBe(0);
    expect(refused.reason).toContain("busy");
    expect(worker.received(s1, "ready")).toEqual([]);
    worker.cancel(s0, busy.id);
    expect((await completion(busy)).code).toBe(1); // CANCELLED
    const ready = await worker.until(() => worker.received(s1, "ready")[0]);
    expect(ready.freeSlots).toBe(1);
    // The freed slot takes the next assignment.
    const next = await run({ command: bash("echo next") }, { to: s1 });
    expect(text(next.result!.stdoutDigest)).toBe("next\n");
    expect(small.id).toBe("small");
  });

  it("reconnects after the connection drops, listing its running lease, and keeps heartbeating it there", async () => {
    const r = await another("reconnect", { slots: 1 });
    const first = worker.socketOf(r.id, 0)!;
    const lease = assign({ command: bash("sleep 3; echo survived") }, { to: first });
    await worker.until(() => worker.received(first, "accepted").length > 0);
    first.socket.terminate();
    const second = await worker.until(() => {
      const s = worker.socketOf(r.id, 0);
      return s && s !== first ? s : undefined;
    });
    expect(second.hello.runningLeaseIds).toEqual([lease.id]);
    await worker.until(() => worker.received(second, "heartbeat").some((h) => h.running.some((p) => p.leaseId === lease.id)));
    const done = await completion(lease);
    expect(text(done.result!.stdoutDigest)).toBe("survived\n");
  });

  it("retries Complete while the worker is unavailable, and drops a result the worker does not accept", async () => {
    const lease = assign({ command: bash("echo retried") });
    lease.failCompletes = 2;
    const r = await completion(lease);
    expect(text(r.result!.stdoutDigest)).toBe("retried\n");
    expect(lease.completes).toHaveLength(1);
  });

  it("streams stdout live while the action runs, and finishes the streams at the end", async () => {
    const lease = assign({ command: bash("echo first-line; echo err-line >&2; sleep 30; echo never") });
    await worker.until(() => lease.logs.stdout.data.toString().includes("first-line"));
    await worker.until(() => lease.logs.stderr.data.toString().includes("err-line"));
    // Live: the action is still running (no result yet).
    expect(lease.completes).toEqual([]);
    expect(lease.logs.stdout.finished).toBe(false);
    worker.cancel(worker.socketOf(RUNNER_ID)!, lease.id);
    const r = await completion(lease);
    expect(r.code).toBe(1);
    expect(lease.logs.stdout.finished).toBe(true);
    expect(lease.logs.stderr.finished).toBe(true);
    expect(lease.logs.stdout.data.toString()).toBe("first-line\n");
    expect(text(r.result!.stdoutDigest)).toBe("first-line\n");
  });

  it("stops the live stream where the worker stops keeping it, and the result still has everything", async () => {
    const capped = await FakeWorker.start({ runnerKey: KEY });
    capped.logCapBytes = 100_000;
    try {
      const r = await another("capped", {}, capped);
      const lease = capped.assign(capped.socketOf(r.id)!, { instanceName: INSTANCE, command: bash("head -c 300000 /dev/zero | tr '\\0' 'y'"), action: { inputRootDigest: protoDigest(putTree({}, INSTANCE, capped)) } });
      const done = await completion(lease, capped);
      expect(lease.logs.stdout.data.byteLength).toBe(100_000);
      expect(blob(done.result!.stdoutDigest, INSTANCE, capped).byteLength).toBe(300_000);
    } finally {
      await capped.stop();
    }
  });

  it("resends live output from where the worker says it holds after it lost some (a gap)", async () => {
    const lease = assign({ command: bash("echo one; sleep 1; echo two; sleep 1; echo three") });
    await worker.until(() => lease.logs.stdout.data.toString().includes("one"));
    lease.logs.stdout.data = Buffer.alloc(0); // the worker lost what it had
    const r = await completion(lease);
    expect(lease.logs.stdout.data.toString()).toBe("one\ntwo\nthree\n");
    expect(text(r.result!.stdoutDigest)).toBe("one\ntwo\nthree\n");
  });

  it("keeps the live stream bounded and complete for output larger than one chunk", async () => {
    // 3 MiB of output in one go: sent in 64 KiB appends, every byte once, in order.
    const r = await run({ command: bash("head -c 3145728 /dev/zero | tr '\\0' 'x'; echo") });
    const lease = worker.leases.get(r.leaseId)!;
    expect(lease.logs.stdout.finished).toBe(true);
    expect(lease.logs.stdout.data.byteLength).toBe(3 * 1024 * 1024 + 1);
    expect(lease.logs.stdout.appends).toBeGreaterThanOrEqual(48);
    expect(blob(r.result!.stdoutDigest).equals(lease.logs.stdout.data)).toBe(true);
  });
});

describe("running actions", () => {
  it("stages nested inputs with executable bits and symlinks, runs in working_directory with the env, and returns output files and a canonical Tree", async () => {
    const big = randomBytes(3 * 1024 * 1024 + 17);
    const script = [
      "set -eu",
      "test -x tool.sh && test ! -x data/a.txt && test ! -x data/deep/b.txt",
      'test "$(cat data/a.txt)" = alpha && test "$(cat data/deep/b.txt)" = beta',
      // one content, two modes: each file keeps its own executable bit
      'test -x ../bin/alpha && test "$(cat ../bin/alpha)" = alpha',
      'test -L data/link && test "$(readlink data/link)" = a.txt && test "$(cat data/link)" = alpha',
      "test -f empty.txt && test ! -s empty.txt && test -d data/emptydir",
      'cmp -s big.bin ../inputs-big.bin || { echo "big input differs" >&2; exit 9; }',
      // outputs; out/ and gen's parent are created by the runner
      "test -d out && test ! -e gen",
      'echo "$GREETING" > out/greeting.txt',
      "./tool.sh x > out/tool.txt",
      "cp tool.sh out/exec.sh",
      "pwd > out/pwd.txt",
      "cp big.bin out/big.bin",
      "mkdir -p gen/sub/deeper gen/x gen/y",
      "echo one > gen/sub/one.txt && echo deep > gen/sub/deeper/d.txt",
      "echo same > gen/x/same.txt && echo same > gen/y/same.txt",
      "ln -s ../x/same.txt gen/sub/rel-link",
      "printf '#!/bin/sh\\necho run\\n' > gen/run.sh && chmod +x gen/run.sh",
      "echo to-stdout; echo to-stderr >&2",
    ].join("\n");
    const t0 = Date.now();
    const r = await run({
      command: bash(script, {
        workingDirectory: "ws",
        environmentVariables: [
          { name: "GREETING", value: "hi there" },
          { name: "PATH", value: PATH_ENV },
        ],
        outputFiles: ["out/big.bin", "out/exec.sh", "out/greeting.txt", "out/never.txt", "out/pwd.txt", "out/tool.txt"],
        outputDirectories: ["gen"],
      }),
      inputs: {
        bin: { alpha: { exec: "alpha" } },
        "inputs-big.bin": big,
        ws: {
          "tool.sh": { exec: '#!/bin/sh\necho "tool:$1"\n' },
          "big.bin": big,
          "empty.txt": "",
          data: { "a.txt": "alpha", deep: { "b.txt": "beta" }, link: { symlink: "a.txt" }, emptydir: {} },
        },
      },
    });
    expect(r.error, r.error?.message).toBeUndefined();
    expect(r.code).toBe(0);
    const result = r.result!;
    expect(text(result.stderrDigest)).toBe("to-stderr\n");
    expect(result.exitCode).toBe(0);
    expect(text(result.stdoutDigest)).toBe("to-stdout\n");

    const files = new Map(result.outputFiles.map((f) => [f.path, f]));
    expect([...files.keys()].sort()).toEqual(["out/big.bin", "out/exec.sh", "out/greeting.txt", "out/pwd.txt", "out/tool.txt"]);
    expect(text(files.get("out/greeting.txt")!.digest)).toBe("hi there\n");
    expect(text(files.get("out/tool.txt")!.digest)).toBe("tool:x\n");
    expect(text(files.get("out/pwd.txt")!.digest).trim()).toMatch(/\/ws$/);
    expect(files.get("out/exec.sh")!.isExecutable).toBe(true);
    expect(files.get("out/tool.txt")!.isExecutable).toBe(false);
    expect(blob(files.get("out/big.bin")!.digest).equals(big)).toBe(true);
    expect(result.outputFileSymlinks).toEqual([]);
    expect(result.outputSymlinks).toEqual([]);

    const { out, tree, byDigest, sub } = treeOf(result, "gen");
    expect(out.isTopologicallySorted).toBe(true);
    expect(out.rootDirectoryDigest).toBeUndefined(); // TREE_ONLY
    const root = tree.root!;
    expect(root.directories.map((d) => d.name)).toEqual(["sub", "x", "y"]);
    expect(root.files.map((f) => [f.name, f.isExecutable])).toEqual([["run.sh", true]]);
    // x and y are the same Directory: stored once.
    expect(root.directories[1]!.digest!.hash).toBe(root.directories[2]!.digest!.hash);
    expect(tree.children).toHaveLength(3); // sub, sub/deeper, x (= y)
    expect(byDigest.size).toBe(4);
    const s = sub(root, "sub");
    expect(s.symlinks.map((l) => [l.name, l.target])).toEqual([["rel-link", "../x/same.txt"]]);
    expect(s.files.map((f) => f.name)).toEqual(["one.txt"]);
    expect(text(s.files[0]!.digest)).toBe("one\n");
    expect(text(sub(s, "deeper").files[0]!.digest)).toBe("deep\n");
    expect(text(root.files[0]!.digest)).toBe("#!/bin/sh\necho run\n");

    // Metadata: who ran it and when, in order.
    const m = result.executionMetadata!;
    expect(m.worker).toBe(`${os.hostname()}/${RUNNER_ID}`);
    const stages = [
      m.workerStartTimestamp,
      m.inputFetchStartTimestamp,
      m.inputFetchCompletedTimestamp,
      m.executionStartTimestamp,
      m.executionCompletedTimestamp,
      m.outputUploadStartTimestamp,
      m.outputUploadCompletedTimestamp,
      m.workerCompletedTimestamp,
    ].map(ms);
    expect(stages).toEqual([...stages].sort((a, b) => a - b));
    expect(stages[0]).toBeGreaterThanOrEqual(t0 - 1000);
    expect(stages[7]).toBeLessThanOrEqual(Date.now() + 1000);

    // The work directory is gone; the inputs stay in the file cache, one file per content and mode.
    await eventually(async () => (await fs.readdir(workDir)).length === 0);
    const cached = await fs.readdir(path.join(cacheDir, "blobs"));
    expect(cached).toContain(sha256(Buffer.from("alpha")));
    expect(cached).toContain(`${sha256(Buffer.from("alpha"))}.x`);
    expect(cached).toContain(sha256(big));
  });

  it("reuses cached input files across actions", async () => {
    const inputs = { "in.txt": "cached once", "run.sh": { exec: "#!/bin/sh\ncat in.txt\n" } };
    const first = await run({ command: { arguments: ["./run.sh"] }, inputs });
    const second = await run({ command: { arguments: ["./run.sh"], environmentVariables: [{ name: "X", value: "2" }] }, inputs });
    for (const r of [first, second]) {
      expect(r.result!.exitCode).toBe(0);
      expect(text(r.result!.stdoutDigest)).toBe("cached once");
    }
    const st = await fs.stat(path.join(cacheDir, "blobs", sha256(Buffer.from("cached once"))));
    expect(st.mode & 0o777).toBe(0o444);
  });

  it("evicts least recently used files from its file cache beyond the size bound", async () => {
    const small = await another("evict", { cacheBytes: 1500 });
    const to = worker.socketOf(small.id)!;
    const cacheSmall = path.join(scratch, "cache-evict");
    const [f1, f2] = [randomBytes(1000), randomBytes(1000)];
    const cached = async () => (await fs.readdir(path.join(cacheSmall, "blobs"))).sort();
    const a = await run({ command: bash("sha256sum f"), inputs: { f: f1 } }, { to });
    expect(text(a.result!.stdoutDigest)).toBe(`${sha256(f1)}  f\n`);
    expect(await cached()).toEqual([sha256(f1)]);
    const b = await run({ command: bash("sha256sum f"), inputs: { f: f2 } }, { to });
    expect(text(b.result!.stdoutDigest)).toBe(`${sha256(f2)}  f\n`);
    expect(await cached()).toEqual([sha256(f2)]);
  });

  it("honours output_paths: files, directories (TREE_AND_DIRECTORY) and symlinks by what they turn out to be", async () => {
    const r = await run({
      command: bash("mkdir -p o/d/e o/empty && echo f > o/f && echo x > o/d/x && : > o/d/e/empty && ln -s f o/l && ln -s d o/dl", {
        outputPaths: ["o/d", "o/dl", "o/empty", "o/f", "o/l", "o/missing"],
        outputDirectoryFormat: Command_OutputDirectoryFormat.TREE_AND_DIRECTORY,
      }),
    });
    const result = r.result!;
    expect(result.exitCode).toBe(0);
    expect(result.outputFiles.map((f) => f.path)).toEqual(["o/f"]);
    expect(text(result.outputFiles[0]!.digest)).toBe("f\n");
    expect(result.outputSymlinks.map((s) => [s.path, s.target]).sort()).toEqual([
      ["o/dl", "d"],
      ["o/l", "f"],
    ]);
    expect(result.outputFileSymlinks).toEqual([]);
    expect(result.outputDirectorySymlinks).toEqual([]);
    const { out, tree, sub } = treeOf(result, "o/d");
    const rootBytes = toBinary(DirectorySchema, tree.root!);
    expect(out.rootDirectoryDigest!.hash).toBe(sha256(rootBytes));
    // DIRECTORY form: every Directory is a blob of its own too.
    expect(blob(out.rootDirectoryDigest).equals(Buffer.from(rootBytes))).toBe(true);
    const e = sub(tree.root!, "e");
    expect(e.files[0]!.digest!.sizeBytes).toBe(0n);
    blob(tree.root!.directories[0]!.digest);
    // An empty output directory: a Tree whose root is present and empty.
    const empty = treeOf(result, "o/empty");
    expect(empty.tree.children).toEqual([]);
    expect([...blob(empty.out.treeDigest)]).toEqual([0x0a, 0x00]);
    expect(result.stdoutDigest).toBeUndefined(); // nothing printed: no blob
    expect(result.stderrDigest).toBeUndefined();
  });

  it("captures unix_mode and mtime when output_node_properties asks: output files, symlinks and every Tree entry", async () => {
    const script =
      "mkdir -p o/d && echo x > o/f && echo y > o/d/g && ln -s f o/l && chmod 640 o/f && chmod 755 o/d/g && chmod 750 o/d && " +
      "touch -d @1700000000.123456789 o/f";
    const asked = await run({ command: bash(script, { outputPaths: ["o/d", "o/f", "o/l"], outputNodeProperties: ["mtime", "unix_mode"] }) });
    const result = asked.result!;
    expect(result.exitCode).toBe(0);
    const f = result.outputFiles.find((x) => x.path === "o/f")!;
    expect(f.nodeProperties?.unixMode).toBe(0o640);
    expect(f.nodeProperties?.mtime).toMatchObject({ seconds: 1700000000n, nanos: 123456789 });
    const l = result.outputSymlinks.find((x) => x.path === "o/l")!;
    expect(l.nodeProperties?.unixMode).toBe(0o777);
    expect(l.nodeProperties?.mtime?.seconds).toBeGreaterThan(0n);
    const { tree } = treeOf(result, "o/d");
    expect(tree.root!.nodeProperties?.unixMode).toBe(0o750);
    expect(tree.root!.nodeProperties?.mtime?.seconds).toBeGreaterThan(0n);
    expect(tree.root!.files.map((x) => [x.name, x.nodeProperties?.unixMode])).toEqual([["g", 0o755]]);

    // Not asked: no NodeProperties anywhere (the Directory digests stay those of plain trees).
    const plain = (await run({ command: bash(script, { outputPaths: ["o/d", "o/f", "o/l"] }) })).result!;
    expect(plain.outputFiles[0]!.nodeProperties).toBeUndefined();
    expect(plain.outputSymlinks[0]!.nodeProperties).toBeUndefined();
    const plainTree = treeOf(plain, "o/d").tree;
    expect(plainTree.root!.nodeProperties).toBeUndefined();
    expect(plainTree.root!.files[0]!.nodeProperties).toBeUndefined();
  });

  it("reports output_files symlinks as output_file_symlinks and output_directories symlinks as output_directory_symlinks", async () => {
    const r = await run({
      command: bash("mkdir -p real/d && echo t > real/t && ln -s ../real/t out/f && ln -s ../real/d out/d", {
        outputFiles: ["out/f"],
        outputDirectories: ["out/d"],
      }),
    });
    expect(r.result!.outputFileSymlinks.map((s) => [s.path, s.target])).toEqual([["out/f", "../real/t"]]);
    expect(r.result!.outputDirectorySymlinks.map((s) => [s.path, s.target])).toEqual([["out/d", "../real/d"]]);
    expect(r.result!.outputSymlinks).toEqual([]);
  });

  it("answers FAILED_PRECONDITION with the result when an output has the wrong type", async () => {
    const r = await run({ command: bash("mkdir -p out/f && echo said", { outputFiles: ["out/f"] }) });
    expect(r.code).toBe(9);
    expect(r.response!.status!.message).toContain("out/f is a directory");
    expect(text(r.result!.stdoutDigest)).toBe("said\n");
  });

  it("returns a non-zero exit code as a result, with stdout and stderr", async () => {
    const r = await run({ command: bash("echo some output; echo oops >&2; exit 3", { outputFiles: ["never"] }) });
    expect(r.code).toBe(0);
    expect(r.result!.exitCode).toBe(3);
    expect(text(r.result!.stdoutDigest)).toBe("some output\n");
    expect(text(r.result!.stderrDigest)).toBe("oops\n");
    expect(r.result!.outputFiles).toEqual([]);
  });

  it("resolves arguments[0] through the Command's PATH or relative to the working directory; 127 when not found", async () => {
    const viaPath = await run({
      command: { arguments: ["hello"], environmentVariables: [{ name: "PATH", value: "/nonexistent:tools" }], workingDirectory: "w" },
      inputs: { w: { tools: { hello: { exec: "#!/bin/sh\necho hello from tools\n" } } } },
    });
    expect(viaPath.result!.exitCode).toBe(0);
    expect(text(viaPath.result!.stdoutDigest)).toBe("hello from tools\n");

    const relative = await run({
      command: { arguments: ["tools/hello"], workingDirectory: "w" },
      inputs: { w: { tools: { hello: { exec: "#!/bin/sh\necho relative\n" } } } },
    });
    expect(text(relative.result!.stdoutDigest)).toBe("relative\n");

    const missing = await run({ command: { arguments: ["no-such-program-kiln"], environmentVariables: [{ name: "PATH", value: PATH_ENV }] } });
    expect(missing.result!.exitCode).toBe(127);
    expect(text(missing.result!.stderrDigest)).toContain("no-such-program-kiln: command not found");
  });

  it("works with the empty instance name", async () => {
    const r = await run({ instance: "", command: bash("echo root instance > out.txt", { outputFiles: ["out.txt"] }) });
    expect(blob(r.result!.outputFiles[0]!.digest, "").toString()).toBe("root instance\n");
  });

  it("answers FAILED_PRECONDITION listing every missing blob", async () => {
    const salt = randomUUID();
    const r = await run({
      command: bash("cat a b"),
      inputs: { a: { missing: `never uploaded a ${salt}` }, d: { b: { missing: `never uploaded b ${salt}` } }, ok: "present" },
    });
    expect(r.error!.code).toBe(9);
    const want = [`never uploaded a ${salt}`, `never uploaded b ${salt}`].map((s) => `blobs/${sha256(Buffer.from(s))}/${s.length}`);
    expect(missingOf(r.error).sort()).toEqual(want.sort());
  });

  it("answers INVALID_ARGUMENT for a bad Command", async () => {
    const noArgs = await run({ command: { arguments: [] } });
    expect(noArgs.error!.code).toBe(3);
    expect(noArgs.error!.message).toContain("no arguments");

    const escape = await run({ command: bash("true", { outputFiles: ["../outside"] }) });
    expect(escape.error!.code).toBe(3);

    const noWorkdir = await run({ command: bash("true", { workingDirectory: "nope" }) });
    expect(noWorkdir.error!.code).toBe(3);
    expect(noWorkdir.error!.message).toContain("working_directory");
  });
});

describe("timeouts and cancellation", () => {
  // Without a pid namespace, so that the test can see the action's processes by their pids.
  let plain: Runner;
  let pids: string;
  beforeAll(async () => {
    plain = await another("plain", { sandbox: "none", slots: 2 });
    pids = path.join(scratch, "pids");
    await fs.mkdir(pids, { mode: 0o777 });
    await fs.chmod(pids, 0o777); // actions may run as another uid
  });

  it("kills an action at its timeout (the whole process group) and answers DEADLINE_EXCEEDED with the stdout so far", async () => {
    const pidFile = path.join(pids, `timeout-${randomUUID()}.pid`);
    const r = await run(
      { command: bash(`sleep 60 & echo $! > ${pidFile}; echo partial; echo err-partial >&2; wait`, { outputFiles: ["never"] }) },
      { timeoutMs: 1500, to: worker.socketOf(plain.id) },
    );
    expect(r.code).toBe(4);
    expect(text(r.result!.stdoutDigest)).toBe("partial\n");
    expect(text(r.result!.stderrDigest)).toBe("err-partial\n");
    expect(r.result!.exitCode).not.toBe(0);
    const pid = Number(await fs.readFile(pidFile, "utf8"));
    await eventually(async () => !(await alive(pid)), 5000);
  });

  it("cancels a running action on Cancel and completes it CANCELLED", async () => {
    const pidFile = path.join(pids, `cancel-${randomUUID()}.pid`);
    const to = worker.socketOf(plain.id)!;
    const lease = assign({ command: bash(`sleep 30 & echo $! > ${pidFile}; echo started; wait`) }, { to });
    await eventually(async () => (await fs.readFile(pidFile, "utf8").catch(() => "")).trim() !== "");
    const pid = Number(await fs.readFile(pidFile, "utf8"));
    expect(await alive(pid)).toBe(true);
    worker.cancel(to, lease.id);
    const r = await completion(lease);
    expect(r.code).toBe(1);
    expect(text(r.result!.stdoutDigest)).toBe("started\n");
    await eventually(async () => !(await alive(pid)), 5000);
  });
});

describe("cancellation while staging", () => {
  it("a Cancel during staging ends the fetch and completes CANCELLED without running the command", async () => {
    const slow = randomBytes(100);
    worker.stalled.add(`${sha256(slow)}/${slow.byteLength}`);
    const to = worker.socketOf(RUNNER_ID)!;
    const lease = assign({ command: bash("echo ran"), inputs: { "slow.bin": slow } });
    await worker.until(() => worker.received(to, "heartbeat").some((h) => h.running.some((p) => p.leaseId === lease.id && p.phase === Phase.FETCHING_INPUTS)));
    worker.cancel(to, lease.id);
    const r = await completion(lease);
    expect(r.code).toBe(1);
    expect(r.response!.status!.message).toContain("while fetching inputs");
    expect(r.result!.stdoutDigest).toBeUndefined();
  });
});

describe("isolation between actions", () => {
  it("an action that rewrites its input in place cannot change what the next action with that input sees", async () => {
    const victim = Buffer.from(`original bytes ${randomUUID()}\n`);
    const inputs = { "in.txt": victim };
    // Every way a shell can try: write through it, chmod then write, truncate, replace.
    const attack = bash(
      [
        "chmod 666 in.txt 2>/dev/null; echo poisoned > in.txt 2>/dev/null",
        "truncate -s 0 in.txt 2>/dev/null",
        "python3 -c \"open('in.txt','r+b').write(b'POISON')\" 2>/dev/null",
        "cat in.txt | sha256sum",
      ].join("; "),
    );
    const first = await run({ command: attack, inputs });
    expect(first.result!.exitCode).toBe(0);
    const second = await run({ command: bash("sha256sum in.txt"), inputs });
    expect(text(second.result!.stdoutDigest)).toBe(`${sha256(victim)}  in.txt\n`);
    // The cached copy itself is intact too.
    const cached = await fs.readFile(path.join(cacheDir, "blobs", sha256(victim)));
    expect(cached.equals(victim)).toBe(true);
  });

  it("runs actions as an unprivileged uid when the runner is root, unable to write the cache or the work directory", async (ctx) => {
    if (process.getuid?.() !== 0) return skipOutsideCi(ctx, "the runner is not root");
    const marker = `poke-${randomUUID()}`;
    const r = await run({
      command: bash(`id -u; for d in ${cacheDir} ${cacheDir}/blobs ${workDir}; do touch $d/${marker} 2>/dev/null; done; true`),
    });
    expect(Number(text(r.result!.stdoutDigest).trim())).toBeGreaterThanOrEqual(61000);
    for (const d of [cacheDir, path.join(cacheDir, "blobs"), workDir]) {
      await expect(fs.stat(path.join(d, marker))).rejects.toThrow(/ENOENT/);
    }
  });

  it("in bwrap: the rest of the filesystem is read-only and the network is off unless the platform asks for network=on", async (ctx) => {
    if (runner.sandbox !== "bwrap") return skipOutsideCi(ctx, "bwrap is missing or cannot create namespaces here");
    // /proc is the sandbox's own, so /proc/net/dev lists the interfaces of its network namespace.
    const probe = "touch /usr/kiln-probe 2>/dev/null && echo wrote-usr; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '";
    const off = await run({ command: bash(probe) });
    expect(text(off.result!.stdoutDigest)).toBe("lo ");
    const on = await run({ command: bash(probe, { platform: { properties: [{ name: "network", value: "on" }] } }) });
    expect(text(on.result!.stdoutDigest)).not.toBe("lo ");
    expect(text(on.result!.stdoutDigest)).not.toContain("wrote-usr");
  });
});

describe("symlinks cannot lead outside the work directory", () => {
  it("refuses an output whose parent is an input symlink leading out, creating nothing there", async () => {
    const outside = await fs.mkdtemp(path.join(scratch, "outside-"));
    const r = await run({ command: bash("true", { outputFiles: ["out/sub/x"] }), inputs: { out: { symlink: outside } } });
    expect(r.error!.code).toBe(3);
    expect(await fs.readdir(outside)).toEqual([]);
  });

  it("refuses a working_directory that is a symlink", async () => {
    const r = await run({ command: bash("pwd", { workingDirectory: "w" }), inputs: { w: { symlink: "/" } } });
    expect(r.error!.code).toBe(3);
    expect(r.error!.message).toContain("working_directory");
  });

  it("does not collect outputs through a symlink the action made to a directory outside", async () => {
    const secret = await fs.mkdtemp(path.join(scratch, "secret-"));
    await fs.writeFile(path.join(secret, "key"), `secret ${randomUUID()}`);
    await fs.chmod(secret, 0o755);
    const r = await run({ command: bash(`rmdir o && ln -s ${secret} o`, { outputFiles: ["o/key"], outputDirectories: ["d"] }) });
    expect(r.code).toBe(9);
    expect(r.response!.status!.message).toContain("o/key lies under a symlink");
    expect(r.result!.outputFiles).toEqual([]);
    const secretBytes = await fs.readFile(path.join(secret, "key"));
    expect([...worker.blobs.values()].some((b) => b.equals(secretBytes))).toBe(false);
  });
});

describe("input bounds", () => {
  it("refuses trees over the entry or byte bound before staging anything", async () => {
    const bounded = await another("bounded", { maxInputEntries: 50, maxInputBytes: 1000 });
    const to = worker.socketOf(bounded.id)!;
    // 8 levels of 8 copies of one directory: 9 Directory blobs, over 16 million entries staged.
    let level = putTree({ f: "leaf" });
    for (let i = 0; i < 8; i++) {
      const directories = Array.from({ length: 8 }, (_, j) => ({ name: `d${j}`, digest: protoDigest(level) }));
      level = toBinary(DirectorySchema, create(DirectorySchema, { directories }));
      worker.putBlob(INSTANCE, level);
    }
    const bomb = await completion(worker.assign(to, { instanceName: INSTANCE, command: bash("true"), action: { inputRootDigest: protoDigest(level) } }));
    expect(bomb.error!.code).toBe(8);
    expect(bomb.error!.message).toContain("at most 50");
    const heavy = await run({ command: bash("true"), inputs: { a: randomBytes(600), b: randomBytes(600) } }, { to });
    expect(heavy.error!.code).toBe(8);
    expect(heavy.error!.message).toContain("bytes");
    // Nothing was staged: no work directory left, no file cached.
    await eventually(async () => (await fs.readdir(path.join(scratch, "work-bounded"))).length === 0);
    expect(await fs.readdir(path.join(scratch, "cache-bounded", "blobs"))).toEqual([]);
    const ok = await run({ command: bash("cat a"), inputs: { a: "small" } }, { to });
    expect(text(ok.result!.stdoutDigest)).toBe("small");
  });
});

describe("the kiln runner command", () => {
  it("connects out with KILN_URL and KILN_RUNNER_TOKEN, offers --property values, and listens on no port", async () => {
    const child = spawn(
      path.join(ROOT, "node_modules/.bin/tsx"),
      ["cli/kiln.ts", "runner", "--slots", "3", "--property", "pool=big", "--property", "ISA=x86-64", "--property", "ISA=x86-avx2", "--id", "cli"],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          PATH: `${path.join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
          KILN_URL: worker.url,
          KILN_RUNNER_TOKEN: KEY,
          KILN_RUNNER_WORK_DIR: path.join(scratch, "work-cli"),
        },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    try {
      const s = await worker.until(() => worker.socketOf("cli"), 30_000);
      expect(s.hello.slots).toBe(3);
      const props = s.hello.properties.map((p) => `${p.name}=${p.value}`).sort();
      expect(props.filter((p) => !p.startsWith("network="))).toEqual(["ISA=x86-64", "ISA=x86-avx2", "OSFamily=linux", "pool=big"]);
      // What its sandbox can do about the network: always network=on (off too with bwrap).
      expect(props).toContain("network=on");
      const r = await run({ command: bash("echo via cli") }, { to: s });
      expect(text(r.result!.stdoutDigest)).toBe("via cli\n");
      expect(r.result!.executionMetadata!.worker).toBe(`${os.hostname()}/cli`);
      // tsx runs the program in a child of its own: look at every process of the tree.
      const tree = descendants(child.pid!);
      const sockets = tree.flatMap((pid) => tcpSockets(pid));
      expect(sockets.some((x) => !x.listening)).toBe(true);
      expect(sockets.filter((x) => x.listening)).toEqual([]);
    } finally {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    }
  });
});

/** `pid` and every process below it. */
function descendants(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const children = readChildren(out[i]!);
    out.push(...children);
  }
  return out;
}

function readChildren(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}
