// The action runner (container/runner) as the worker's scheduler uses it: inputs uploaded through
// the worker's blob HTTP surface, POST /v1/actions, the ActionResult decoded and every output read
// back from the CAS. Covers staging (nested directories, executable bits, symlinks, the file cache),
// working_directory, environment, both output styles, canonical Trees, exit codes, stdout/stderr,
// timeouts, cancellation, missing inputs, bad actions, capacity and the CLI entry.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ActionResultSchema,
  ActionSchema,
  Command_OutputDirectoryFormat,
  CommandSchema,
  DirectorySchema,
  TreeSchema,
  type ActionResult,
  type Digest,
  type Directory,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { startRunner, type Runner } from "../../container/runner/server.ts";
import { startStack } from "./stack.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const INSTANCE = "e2e/runner";
const PATH_ENV = "/usr/local/bin:/usr/bin:/bin";

let stack: Awaited<ReturnType<typeof startStack>>;
let runner: Runner;
let scratch: string;
let workDir: string;
let cacheDir: string;

beforeAll(async () => {
  stack = await startStack();
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-runner-test-"));
  workDir = path.join(scratch, "work");
  cacheDir = path.join(scratch, "cache");
  runner = await startRunner({ id: "e2e", port: 0, concurrency: 4, workDir, cacheDir, killGraceMs: 1000 });
}, 120_000);

afterAll(async () => {
  await runner?.close();
  await stack?.stop();
  if (scratch) await fs.rm(scratch, { recursive: true, force: true });
}, 60_000);

// ---- CAS over the worker's HTTP blob surface ----

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const digestOf = (b: Uint8Array) => ({ hash: sha256(b), size: b.byteLength });
const protoDigest = (b: Uint8Array): MessageInitShape<typeof ActionSchema>["commandDigest"] => ({
  hash: sha256(b),
  sizeBytes: BigInt(b.byteLength),
});
const prefix = (instance: string) => (instance ? `/${instance}` : "");

const uploaded = new Set<string>();

async function putBlob(bytes: Uint8Array, instance = INSTANCE): Promise<void> {
  const { hash, size } = digestOf(bytes);
  if (uploaded.has(`${instance}:${hash}`)) return;
  // The worker drops the connection when it cancels the body of a blob it already has, so a
  // repeated PUT can fail on the network (as the runner's own client, retry).
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`${stack.httpUrl}${prefix(instance)}/uploads/${randomUUID()}/blobs/${hash}/${size}`, {
        method: "PUT",
        body: bytes,
      });
      expect(res.status, await res.clone().text()).toBe(200);
      await res.arrayBuffer();
      break;
    } catch (e) {
      if (!(e instanceof TypeError) || attempt === 3) throw e;
    }
  }
  uploaded.add(`${instance}:${hash}`);
}

async function getBlob(d: Digest | undefined, instance = INSTANCE): Promise<Buffer> {
  expect(d).toBeDefined();
  const res = await fetch(`${stack.httpUrl}${prefix(instance)}/blobs/${d!.hash}/${d!.sizeBytes}`);
  expect(res.status).toBe(200);
  const bytes = Buffer.from(await res.arrayBuffer());
  expect(sha256(bytes)).toBe(d!.hash);
  return bytes;
}

const text = async (d: Digest | undefined) => (await getBlob(d)).toString("utf8");

// ---- input trees ----

/** A file (string or bytes), an executable file, a symlink, or a directory of them. */
type Entry = string | Buffer | { exec: string | Buffer } | { symlink: string } | { missing: string } | Spec;
interface Spec {
  [name: string]: Entry;
}

const isSpec = (e: Entry): e is Spec =>
  typeof e === "object" && !Buffer.isBuffer(e) && !("exec" in e) && !("symlink" in e) && !("missing" in e);
const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Uploads the tree (except `missing` files) and returns its root Directory's bytes. */
async function putTree(spec: Spec, instance = INSTANCE): Promise<Uint8Array> {
  const dir: MessageInitShape<typeof DirectorySchema> & { files: any[]; directories: any[]; symlinks: any[] } = {
    files: [],
    directories: [],
    symlinks: [],
  };
  for (const [name, e] of Object.entries(spec)) {
    if (isSpec(e)) {
      dir.directories.push({ name, digest: protoDigest(await putTree(e, instance)) });
    } else if (typeof e === "object" && "symlink" in e) {
      dir.symlinks.push({ name, target: (e as { symlink: string }).symlink });
    } else if (typeof e === "object" && "missing" in e) {
      dir.files.push({ name, digest: protoDigest(Buffer.from((e as { missing: string }).missing)) });
    } else {
      const exec = typeof e === "object" && !Buffer.isBuffer(e) && "exec" in e;
      const content = exec ? (e as { exec: string | Buffer }).exec : (e as string | Buffer);
      const bytes = typeof content === "string" ? Buffer.from(content) : content;
      if (bytes.byteLength > 0) await putBlob(bytes, instance);
      dir.files.push({ name, digest: protoDigest(bytes), isExecutable: exec });
    }
  }
  dir.files.sort(byName);
  dir.directories.sort(byName);
  dir.symlinks.sort(byName);
  const bytes = toBinary(DirectorySchema, create(DirectorySchema, dir));
  await putBlob(bytes, instance);
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
}

interface ActionSpec {
  command: CommandInit;
  inputs?: Spec;
  instance?: string;
  skipCommandUpload?: boolean;
}

/** Uploads Command, input tree and Action; returns the Action digest as the runner protocol carries it. */
async function putAction(a: ActionSpec): Promise<{ hash: string; sizeBytes: string }> {
  const instance = a.instance ?? INSTANCE;
  const command = toBinary(CommandSchema, create(CommandSchema, a.command));
  if (!a.skipCommandUpload) await putBlob(command, instance);
  const root = await putTree(a.inputs ?? {}, instance);
  const action = toBinary(ActionSchema, create(ActionSchema, { commandDigest: protoDigest(command), inputRootDigest: protoDigest(root) }));
  await putBlob(action, instance);
  return { hash: sha256(action), sizeBytes: String(action.byteLength) };
}

const bash = (script: string, extra: Partial<CommandInit> = {}): CommandInit => ({
  arguments: ["bash", "-c", script],
  environmentVariables: [{ name: "PATH", value: PATH_ENV }],
  ...extra,
});

interface Executed {
  status: number;
  kilnStatus: string | null;
  result?: ActionResult;
  error?: { status: string; message: string; missing?: string[] };
  headers: Headers;
}

async function execute(
  actionDigest: { hash: string; sizeBytes: string },
  opts: { timeoutMs?: number; operation?: string; instance?: string; on?: Runner } = {},
): Promise<Executed> {
  const res = await fetch(`${(opts.on ?? runner).url}/v1/actions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      operation: opts.operation ?? `operations/${randomUUID()}`,
      casUrl: stack.httpUrl,
      authorization: null,
      instanceName: opts.instance ?? INSTANCE,
      actionDigest,
      timeoutMs: opts.timeoutMs ?? 60_000,
    }),
  });
  const out: Executed = { status: res.status, kilnStatus: res.headers.get("x-kiln-status"), headers: res.headers };
  if (res.headers.get("content-type") === "application/x-protobuf") {
    out.result = fromBinary(ActionResultSchema, new Uint8Array(await res.arrayBuffer()));
  } else {
    out.error = ((await res.json()) as { error: Executed["error"] }).error;
  }
  return out;
}

async function run(a: ActionSpec, opts: Parameters<typeof execute>[1] = {}): Promise<Executed> {
  return execute(await putAction(a), { instance: a.instance, ...opts });
}

/** The Tree of an output directory, checked to be canonical: decoding and re-encoding changes no byte. */
async function treeOf(result: ActionResult, p: string) {
  const out = result.outputDirectories.find((d) => d.path === p);
  expect(out, `output directory ${p}`).toBeDefined();
  const bytes = await getBlob(out!.treeDigest);
  const tree = fromBinary(TreeSchema, bytes);
  expect(Buffer.from(toBinary(TreeSchema, tree)).equals(bytes)).toBe(true);
  const byDigest = new Map<string, Directory>();
  for (const d of [tree.root!, ...tree.children]) {
    const encoded = toBinary(DirectorySchema, d);
    // What Bazel does: re-encode each Directory and look it up by the digest its parent names.
    byDigest.set(sha256(encoded), d);
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

describe("runner", () => {
  it("reports its id, capacity and platform", async () => {
    const res = await fetch(`${runner.url}/v1/status`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      id: "e2e",
      capacity: 4,
      running: 0,
      properties: { OSFamily: "linux", ISA: os.arch() === "arm64" ? "arm-a64" : "x86-64" },
    });
  });

  it("stages nested inputs with executable bits and symlinks, runs in working_directory with the env, and returns output files and a canonical Tree", async () => {
    const big = randomBytes(3 * 1024 * 1024 + 17);
    const script = [
      "set -eu",
      // inputs
      "test -x tool.sh && test ! -x data/a.txt && test ! -x data/deep/b.txt",
      'test "$(cat data/a.txt)" = alpha && test "$(cat data/deep/b.txt)" = beta',
      // one content, two modes: each file keeps its own executable bit
      'test -x ../bin/alpha && test "$(cat ../bin/alpha)" = alpha',
      'test -L data/link && test "$(readlink data/link)" = a.txt && test "$(cat data/link)" = alpha',
      "test -f empty.txt && test ! -s empty.txt && test -d data/emptydir",
      'cmp -s big.bin ../inputs-big.bin || { echo "big input differs" >&2; exit 9; }',
      // outputs; out/ and gen's parent are created by the runner
      'test -d out && test ! -e gen',
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
    expect(r.status, JSON.stringify(r.error)).toBe(200);
    expect(r.kilnStatus).toBeNull();
    const result = r.result!;
    expect(await text(result.stderrDigest)).toBe("to-stderr\n");
    expect(result.exitCode).toBe(0);
    expect(await text(result.stdoutDigest)).toBe("to-stdout\n");

    const files = new Map(result.outputFiles.map((f) => [f.path, f]));
    expect([...files.keys()].sort()).toEqual(["out/big.bin", "out/exec.sh", "out/greeting.txt", "out/pwd.txt", "out/tool.txt"]);
    expect(await text(files.get("out/greeting.txt")!.digest)).toBe("hi there\n");
    expect(await text(files.get("out/tool.txt")!.digest)).toBe("tool:x\n");
    expect((await text(files.get("out/pwd.txt")!.digest)).trim()).toMatch(/\/ws$/);
    expect(files.get("out/exec.sh")!.isExecutable).toBe(true);
    expect(files.get("out/tool.txt")!.isExecutable).toBe(false);
    expect((await getBlob(files.get("out/big.bin")!.digest)).equals(big)).toBe(true);
    expect(result.outputFileSymlinks).toEqual([]);
    expect(result.outputSymlinks).toEqual([]);

    const { out, tree, byDigest, sub } = await treeOf(result, "gen");
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
    expect(await text(s.files[0]!.digest)).toBe("one\n");
    expect(await text(sub(s, "deeper").files[0]!.digest)).toBe("deep\n");
    expect(await text(root.files[0]!.digest)).toBe("#!/bin/sh\necho run\n");

    // Metadata: who ran it and when, in order.
    const m = result.executionMetadata!;
    expect(m.worker).toBe(`${os.hostname()}/e2e`);
    const stages = [
      m.queuedTimestamp,
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
    expect(stages[8]).toBeLessThanOrEqual(Date.now() + 1000);

    // The work directory is gone; the inputs stay in the file cache, one file per content and mode.
    await eventually(async () => (await fs.readdir(workDir)).length === 0);
    const cached = await fs.readdir(path.join(cacheDir, "blobs"));
    expect(cached).toContain(sha256(Buffer.from("alpha")));
    expect(cached).toContain(`${sha256(Buffer.from("alpha"))}.x`);
    expect(cached).toContain(sha256(big));
  }, 120_000);

  it("reuses cached input files across actions", async () => {
    const inputs = { "in.txt": "cached once", "run.sh": { exec: "#!/bin/sh\ncat in.txt\n" } };
    const first = await run({ command: { arguments: ["./run.sh"] }, inputs });
    const second = await run({ command: { arguments: ["./run.sh"], environmentVariables: [{ name: "X", value: "2" }] }, inputs });
    for (const r of [first, second]) {
      expect(r.status).toBe(200);
      expect(r.result!.exitCode).toBe(0);
      expect(await text(r.result!.stdoutDigest)).toBe("cached once");
    }
    const st = await fs.stat(path.join(cacheDir, "blobs", sha256(Buffer.from("cached once"))));
    expect(st.mode & 0o777).toBe(0o444);
  }, 60_000);

  it("evicts least recently used files from its file cache beyond the size bound", async () => {
    const cacheSmall = path.join(scratch, "cache-evict");
    const small = await startRunner({ id: "evict", port: 0, concurrency: 1, workDir: path.join(scratch, "work-evict"), cacheDir: cacheSmall, cacheBytes: 1500 });
    try {
      const [f1, f2] = [randomBytes(1000), randomBytes(1000)];
      const cached = async () => (await fs.readdir(path.join(cacheSmall, "blobs"))).sort();
      const a = await run({ command: bash("sha256sum f"), inputs: { f: f1 } }, { on: small });
      expect(await text(a.result!.stdoutDigest)).toBe(`${sha256(f1)}  f\n`);
      expect(await cached()).toEqual([sha256(f1)]);
      const b = await run({ command: bash("sha256sum f"), inputs: { f: f2 } }, { on: small });
      expect(await text(b.result!.stdoutDigest)).toBe(`${sha256(f2)}  f\n`);
      expect(await cached()).toEqual([sha256(f2)]);
    } finally {
      await small.close();
    }
  }, 60_000);

  it("honours output_paths: files, directories (TREE_AND_DIRECTORY) and symlinks by what they turn out to be", async () => {
    const r = await run({
      command: bash("mkdir -p o/d/e o/empty && echo f > o/f && echo x > o/d/x && : > o/d/e/empty && ln -s f o/l && ln -s d o/dl", {
        outputPaths: ["o/d", "o/dl", "o/empty", "o/f", "o/l", "o/missing"],
        outputDirectoryFormat: Command_OutputDirectoryFormat.TREE_AND_DIRECTORY,
      }),
    });
    expect(r.status).toBe(200);
    const result = r.result!;
    expect(result.exitCode).toBe(0);
    expect(result.outputFiles.map((f) => f.path)).toEqual(["o/f"]);
    expect(await text(result.outputFiles[0]!.digest)).toBe("f\n");
    expect(result.outputSymlinks.map((s) => [s.path, s.target]).sort()).toEqual([
      ["o/dl", "d"],
      ["o/l", "f"],
    ]);
    expect(result.outputFileSymlinks).toEqual([]);
    expect(result.outputDirectorySymlinks).toEqual([]);
    const { out, tree, sub } = await treeOf(result, "o/d");
    const rootBytes = toBinary(DirectorySchema, tree.root!);
    expect(out.rootDirectoryDigest!.hash).toBe(sha256(rootBytes));
    // DIRECTORY form: every Directory is a blob of its own too.
    expect((await getBlob(out.rootDirectoryDigest)).equals(Buffer.from(rootBytes))).toBe(true);
    const e = sub(tree.root!, "e");
    expect(e.files[0]!.digest!.sizeBytes).toBe(0n);
    await getBlob(tree.root!.directories[0]!.digest);
    // An empty output directory: a Tree whose root is present and empty.
    const empty = await treeOf(result, "o/empty");
    expect(empty.tree.children).toEqual([]);
    expect([...(await getBlob(empty.out.treeDigest))]).toEqual([0x0a, 0x00]);
    expect(result.stdoutDigest).toBeUndefined(); // nothing printed: no blob
    expect(result.stderrDigest).toBeUndefined();
  }, 60_000);

  it("reports output_files symlinks as output_file_symlinks and output_directories symlinks as output_directory_symlinks", async () => {
    const r = await run({
      command: bash("mkdir -p real/d && echo t > real/t && ln -s ../real/t out/f && ln -s ../real/d out/d", {
        outputFiles: ["out/f"],
        outputDirectories: ["out/d"],
      }),
    });
    expect(r.status).toBe(200);
    expect(r.result!.outputFileSymlinks.map((s) => [s.path, s.target])).toEqual([["out/f", "../real/t"]]);
    expect(r.result!.outputDirectorySymlinks.map((s) => [s.path, s.target])).toEqual([["out/d", "../real/d"]]);
    expect(r.result!.outputSymlinks).toEqual([]);
  }, 60_000);

  it("answers FAILED_PRECONDITION with the result when an output has the wrong type", async () => {
    const r = await run({ command: bash("mkdir -p out/f && echo said", { outputFiles: ["out/f"] }) });
    expect(r.status).toBe(200);
    expect(r.kilnStatus).toBe("FAILED_PRECONDITION");
    expect(r.headers.get("x-kiln-message")).toContain("out/f is a directory");
    expect(await text(r.result!.stdoutDigest)).toBe("said\n");
  }, 60_000);

  it("returns a non-zero exit code as a result, with stdout and stderr", async () => {
    const r = await run({ command: bash("echo some output; echo oops >&2; exit 3", { outputFiles: ["never"] }) });
    expect(r.status).toBe(200);
    expect(r.kilnStatus).toBeNull();
    expect(r.result!.exitCode).toBe(3);
    expect(await text(r.result!.stdoutDigest)).toBe("some output\n");
    expect(await text(r.result!.stderrDigest)).toBe("oops\n");
    expect(r.result!.outputFiles).toEqual([]);
  }, 60_000);

  it("resolves arguments[0] through the Command's PATH or relative to the working directory; 127 when not found", async () => {
    const viaPath = await run({
      command: { arguments: ["hello"], environmentVariables: [{ name: "PATH", value: "/nonexistent:tools" }], workingDirectory: "w" },
      inputs: { w: { tools: { hello: { exec: "#!/bin/sh\necho hello from tools\n" } } } },
    });
    expect(viaPath.result!.exitCode).toBe(0);
    expect(await text(viaPath.result!.stdoutDigest)).toBe("hello from tools\n");

    const relative = await run({
      command: { arguments: ["tools/hello"], workingDirectory: "w" },
      inputs: { w: { tools: { hello: { exec: "#!/bin/sh\necho relative\n" } } } },
    });
    expect(await text(relative.result!.stdoutDigest)).toBe("relative\n");

    const missing = await run({ command: { arguments: ["no-such-program-kiln"], environmentVariables: [{ name: "PATH", value: PATH_ENV }] } });
    expect(missing.status).toBe(200);
    expect(missing.result!.exitCode).toBe(127);
    expect(await text(missing.result!.stderrDigest)).toContain("no-such-program-kiln: command not found");
  }, 60_000);

  it("works with the empty instance name", async () => {
    const r = await run({ instance: "", command: bash("echo root instance > out.txt", { outputFiles: ["out.txt"] }) });
    expect(r.status).toBe(200);
    expect((await getBlob(r.result!.outputFiles[0]!.digest, "")).toString()).toBe("root instance\n");
  }, 60_000);

  it("kills an action at its timeout and answers DEADLINE_EXCEEDED with the stdout so far", async () => {
    const pidFile = path.join(scratch, `timeout-${randomUUID()}.pid`);
    const t0 = Date.now();
    const r = await run(
      { command: bash(`sleep 60 & echo $! > ${pidFile}; echo partial; echo err-partial >&2; wait`, { outputFiles: ["never"] }) },
      { timeoutMs: 1500 },
    );
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(r.status).toBe(200);
    expect(r.kilnStatus).toBe("DEADLINE_EXCEEDED");
    expect(await text(r.result!.stdoutDigest)).toBe("partial\n");
    expect(await text(r.result!.stderrDigest)).toBe("err-partial\n");
    expect(r.result!.exitCode).not.toBe(0);
    // The whole process group went, the background sleep included.
    const pid = Number(await fs.readFile(pidFile, "utf8"));
    await eventually(async () => !(await alive(pid)), 5000);
  }, 60_000);

  it("cancels a running action on DELETE /v1/actions/{id}", async () => {
    const pidFile = path.join(scratch, `cancel-${randomUUID()}.pid`);
    const id = randomUUID();
    const digest = await putAction({ command: bash(`sleep 30 & echo $! > ${pidFile}; echo started; wait`) });
    const t0 = Date.now();
    const pending = execute(digest, { operation: `operations/${id}` });
    await eventually(async () => (await fs.readFile(pidFile, "utf8").catch(() => "")).trim() !== "");
    const pid = Number(await fs.readFile(pidFile, "utf8"));
    expect(await alive(pid)).toBe(true);
    const del = await fetch(`${runner.url}/v1/actions/${id}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    const r = await pending;
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(r.status).toBe(200);
    expect(r.kilnStatus).toBe("CANCELLED");
    expect(await text(r.result!.stdoutDigest)).toBe("started\n");
    await eventually(async () => !(await alive(pid)), 5000);
    expect((await fetch(`${runner.url}/v1/actions/${id}`, { method: "DELETE" })).status).toBe(404);
  }, 60_000);

  it("answers 412 FAILED_PRECONDITION listing every missing blob", async () => {
    const salt = randomUUID();
    const r = await run({
      command: bash("cat a b"),
      inputs: { a: { missing: `never uploaded a ${salt}` }, d: { b: { missing: `never uploaded b ${salt}` } }, ok: "present" },
    });
    expect(r.status).toBe(412);
    expect(r.error!.status).toBe("FAILED_PRECONDITION");
    const want = [`never uploaded a ${salt}`, `never uploaded b ${salt}`].map((s) => `blobs/${sha256(Buffer.from(s))}/${s.length}`);
    expect([...r.error!.missing!].sort()).toEqual(want.sort());

    const absent = Buffer.from(`no such action ${randomUUID()}`);
    const noAction = await execute({ hash: sha256(absent), sizeBytes: String(absent.byteLength) });
    expect(noAction.status).toBe(412);
    expect(noAction.error!.missing).toEqual([`blobs/${sha256(absent)}/${absent.byteLength}`]);

    const unstored = bash(`echo never stored ${randomUUID()}`);
    const commandBytes = toBinary(CommandSchema, create(CommandSchema, unstored));
    const noCommand = await run({ command: unstored, skipCommandUpload: true });
    expect(noCommand.status).toBe(412);
    expect(noCommand.error!.missing).toEqual([`blobs/${sha256(commandBytes)}/${commandBytes.byteLength}`]);
  }, 60_000);

  it("answers 400 INVALID_ARGUMENT for a bad request, Action or Command", async () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0x01, 0x02]);
    await putBlob(garbage);
    const notAnAction = await execute({ hash: sha256(garbage), sizeBytes: String(garbage.byteLength) });
    expect(notAnAction.status).toBe(400);
    expect(notAnAction.error!.status).toBe("INVALID_ARGUMENT");

    const noArgs = await run({ command: { arguments: [] } });
    expect(noArgs.status).toBe(400);
    expect(noArgs.error!.message).toContain("no arguments");

    const escape = await run({ command: bash("true", { outputFiles: ["../outside"] }) });
    expect(escape.status).toBe(400);

    const noWorkdir = await run({ command: bash("true", { workingDirectory: "nope" }) });
    expect(noWorkdir.status).toBe(400);
    expect(noWorkdir.error!.message).toContain("working_directory");

    const badBody = await fetch(`${runner.url}/v1/actions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ operation: "operations/x", casUrl: stack.httpUrl, actionDigest: { hash: "nothex", sizeBytes: "1" } }),
    });
    expect(badBody.status).toBe(400);
    expect(((await badBody.json()) as { error: { status: string } }).error.status).toBe("INVALID_ARGUMENT");
  }, 60_000);

  it("answers 503 with retry-after at capacity", async () => {
    const small = await startRunner({
      id: "small",
      port: 0,
      concurrency: 1,
      workDir: path.join(scratch, "work-small"),
      cacheDir: path.join(scratch, "cache-small"),
      killGraceMs: 500,
    });
    try {
      const id = randomUUID();
      const busy = execute(await putAction({ command: bash("sleep 30") }), { operation: `operations/${id}`, on: small });
      await eventually(async () => ((await (await fetch(`${small.url}/v1/status`)).json()) as { running: number }).running === 1);
      const refused = await fetch(`${small.url}/v1/actions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ operation: `operations/${randomUUID()}`, casUrl: stack.httpUrl, actionDigest: { hash: "0".repeat(64), sizeBytes: "1" } }),
      });
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("1");
      await fetch(`${small.url}/v1/actions/${id}`, { method: "DELETE" });
      expect((await busy).kilnStatus).toBe("CANCELLED");
      // The slot is free again as soon as the answer is out.
      const next = await execute(await putAction({ command: bash("echo next") }), { on: small });
      expect(next.status).toBe(200);
      expect(await text(next.result!.stdoutDigest)).toBe("next\n");
    } finally {
      await small.close();
    }
  }, 60_000);

  it("runs as a program (main.ts) configured by KILN_RUNNER_* variables", async () => {
    const child = spawn(path.join(ROOT, "node_modules/.bin/tsx"), ["container/runner/main.ts", "--port", "0"], {
      cwd: ROOT,
      env: {
        ...process.env,
        PATH: `${path.join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
        KILN_RUNNER_ID: "cli",
        KILN_RUNNER_CONCURRENCY: "3",
        KILN_RUNNER_PROPERTIES: "pool=big,ISA=x86-64|x86-avx2",
        KILN_RUNNER_WORK_DIR: path.join(scratch, "work-cli"),
        KILN_RUNNER_CACHE_DIR: path.join(scratch, "cache-cli"),
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout!.on("data", (b: Buffer) => {
          out += b.toString();
          const m = /listening on (http:\/\/\S+)/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once("exit", (code) => reject(new Error(`runner exited with ${code}: ${out}`)));
      });
      const status = (await (await fetch(`${url}/v1/status`)).json()) as Record<string, unknown>;
      expect(status).toMatchObject({ id: "cli", capacity: 3, running: 0, properties: { OSFamily: "linux", ISA: "x86-64|x86-avx2", pool: "big" } });
      const r = await execute(await putAction({ command: bash("echo via cli") }), { on: { url } as Runner });
      expect(await text(r.result!.stdoutDigest)).toBe("via cli\n");
      expect(r.result!.executionMetadata!.worker).toBe(`${os.hostname()}/cli`);
    } finally {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    }
  }, 60_000);
});
