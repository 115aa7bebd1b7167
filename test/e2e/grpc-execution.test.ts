// Remote execution as a native gRPC client sees it: real @grpc/grpc-js clients (proto-loader, no
// generated code) through the h2c bridge, a real runner. Inputs are uploaded with BatchUpdateBlobs
// (messages encoded with the generated protobuf-es schemas); then Execute, WaitExecution and
// google.longrunning.Operations: missing inputs, cancellation, timeouts, in-flight dedup, a
// runner killed mid-action (re-queued, or UNAVAILABLE when none comes back), reconnecting with
// WaitExecution, and ListOperations paging and filtering.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ActionSchema,
  CommandSchema,
  DirectorySchema,
  ExecuteOperationMetadataSchema,
  ExecuteResponseSchema,
  ExecutionStage_Value,
  type ExecuteResponse,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.ts";
import { connect, digestOf, errorOf, grpc, unary, type Client, type Clients, type Digest } from "./grpc-client.ts";
import { startStack, type Stack } from "./stack.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PATH_ENV = "/usr/local/bin:/usr/bin:/bin";

// google.rpc.Code values, as ExecuteResponse.status carries them.
const OK = 0;
const CANCELLED = 1;
const DEADLINE_EXCEEDED = 4;
const UNAVAILABLE = 14;

// ---- gRPC clients for Execution and Operations (grpc-client.ts has the cache services) ----

const definition = protoLoader.loadSync(
  ["build/bazel/remote/execution/v2/remote_execution.proto", "google/longrunning/operations.proto"],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [`${ROOT}proto`, `${ROOT}node_modules/google-proto-files`] },
);
const pkg = grpc.loadPackageDefinition(definition) as any;

interface ExecClients extends Clients {
  execution: Client;
  operations: Client;
}

function connectExec(target: string): ExecClients {
  const base = connect(target);
  const creds = grpc.credentials.createInsecure();
  const execution = new pkg.build.bazel.remote.execution.v2.Execution(target, creds) as Client;
  const operations = new pkg.google.longrunning.Operations(target, creds) as Client;
  return {
    ...base,
    execution,
    operations,
    close() {
      base.close();
      execution.close();
      operations.close();
    },
  };
}

// ---- actions ----

const pd = (b: Uint8Array) => ({ hash: digestOf(b).hash, sizeBytes: BigInt(b.byteLength) });

interface ActionSpec {
  /** A /bin/sh script. */
  script: string;
  /** Files of the input root; `false` content: listed in the Directory but never uploaded. */
  inputs?: Record<string, string | false>;
  timeoutSeconds?: number;
  /** Leave the Command out of the CAS. */
  skipCommand?: boolean;
}

interface Uploaded {
  digest: Digest;
  /** Digests of what was left out of the CAS on purpose. */
  missing: Digest[];
}

async function putBlobs(c: Clients, instance: string, blobs: Uint8Array[]): Promise<void> {
  const res = await unary(c.cas, "BatchUpdateBlobs", {
    instance_name: instance,
    requests: blobs.map((data) => ({ digest: digestOf(data), data: Buffer.from(data) })),
  });
  for (const r of res.responses) expect(r.status?.code ?? 0, r.status?.message).toBe(0);
}

/** Uploads the input root, Command and Action (except what the spec leaves out). */
async function putAction(c: Clients, instance: string, spec: ActionSpec): Promise<Uploaded> {
  const blobs: Uint8Array[] = [];
  const missing: Digest[] = [];
  const files = Object.entries(spec.inputs ?? { "input.txt": "input\n" })
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, content]) => {
      const bytes = Buffer.from(content === false ? `never uploaded ${randomUUID()}` : content);
      if (content === false) missing.push(digestOf(bytes));
      else blobs.push(bytes);
      return { name, digest: pd(bytes) };
    });
  const root = toBinary(DirectorySchema, create(DirectorySchema, { files }));
  const command = toBinary(
    CommandSchema,
    create(CommandSchema, { arguments: ["/bin/sh", "-c", spec.script], environmentVariables: [{ name: "PATH", value: PATH_ENV }] }),
  );
  const action = toBinary(
    ActionSchema,
    create(ActionSchema, {
      commandDigest: pd(command),
      inputRootDigest: pd(root),
      ...(spec.timeoutSeconds ? { timeout: { seconds: BigInt(spec.timeoutSeconds) } } : {}),
    }),
  );
  blobs.push(root, action);
  if (spec.skipCommand) missing.unshift(digestOf(command));
  else blobs.push(command);
  await putBlobs(c, instance, blobs);
  return { digest: digestOf(action), missing };
}

// ---- Execute streams ----

interface Op {
  name: string;
  done: boolean;
  stage: string;
  response?: ExecuteResponse;
}

function decodeOp(raw: any): Op {
  expect(raw.error ?? null, "Operation.error must never be set").toBeNull();
  const meta = fromBinary(ExecuteOperationMetadataSchema, raw.metadata.value);
  return {
    name: raw.name,
    done: raw.done,
    stage: ExecutionStage_Value[meta.stage]!,
    response: raw.response ? fromBinary(ExecuteResponseSchema, raw.response.value) : undefined,
  };
}

interface Watch {
  call: grpc.ClientReadableStream<any>;
  ops: Op[];
  /** The first Operation that satisfies `pred` (already seen or still to come). */
  next(pred?: (op: Op) => boolean): Promise<Op>;
  /** Every Operation of the stream, once it ends; rejects with the call's error. */
  end: Promise<Op[]>;
}

function watch(call: grpc.ClientReadableStream<any>): Watch {
  const ops: Op[] = [];
  const listeners = new Set<() => void>();
  let failure: unknown;
  let ended = false;
  const end = new Promise<Op[]>((resolve, reject) => {
    call.on("data", (raw) => {
      ops.push(decodeOp(raw));
      for (const l of listeners) l();
    });
    call.on("error", (e) => {
      failure = e;
      reject(e);
      for (const l of listeners) l();
    });
    call.on("end", () => {
      ended = true;
      resolve(ops);
      for (const l of listeners) l();
    });
  });
  end.catch(() => {}); // observed through next() or by awaiting end
  return {
    call,
    ops,
    end,
    next(pred = () => true) {
      return new Promise<Op>((resolve, reject) => {
        const check = () => {
          const hit = ops.find(pred);
          if (hit) return (listeners.delete(check), resolve(hit));
          if (failure || ended) (listeners.delete(check), reject(failure ?? new Error("the stream ended without such an Operation")));
        };
        listeners.add(check);
        check();
      });
    },
  };
}

function execute(c: ExecClients, instance: string, digest: Digest, extra: object = {}): Watch {
  return watch(c.execution.Execute({ instance_name: instance, action_digest: digest, ...extra }));
}

function waitExecution(c: ExecClients, name: string): Watch {
  return watch(c.execution.WaitExecution({ name }));
}

/** The final Operation of an ended stream: done, COMPLETED, with an ExecuteResponse. */
async function finalOf(w: Watch): Promise<Op & { response: ExecuteResponse }> {
  const ops = await w.end;
  const last = ops.at(-1);
  expect(last?.done, "the stream ends with a done Operation").toBe(true);
  expect(last!.stage).toBe("COMPLETED");
  expect(last!.response).toBeDefined();
  return last as Op & { response: ExecuteResponse };
}

async function readBlob(c: Clients, instance: string, d: { hash: string; sizeBytes: bigint } | undefined): Promise<string> {
  expect(d).toBeDefined();
  const res = await unary(c.cas, "BatchReadBlobs", { instance_name: instance, digests: [{ hash: d!.hash, size_bytes: String(d!.sizeBytes) }] });
  expect(res.responses[0].status?.code ?? 0).toBe(0);
  return Buffer.from(res.responses[0].data).toString("utf8");
}

// ---- processes and files ----

/** Whether a process still runs (a zombie does not count). */
async function alive(pid: number): Promise<boolean> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

async function eventually<T>(check: () => Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The non-empty lines of a file ([] if it does not exist). */
const linesOf = async (file: string) => (await fs.readFile(file, "utf8").catch(() => "")).split("\n").filter(Boolean);

/**
 * Kills the `sleep` an action left behind (it wrote its pid to `file`, then exec'd sleep), e.g.
 * after its runner was killed. Only a live `sleep` in a runner work directory: never a process
 * that reused the pid.
 */
async function killSleepsIn(file: string) {
  for (const line of await linesOf(file)) {
    const pid = Number(line);
    if (!Number.isSafeInteger(pid) || pid <= 1 || !(await alive(pid))) continue;
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(() => "");
    if (!cmdline.startsWith("sleep\0") || !cwd.includes("/work")) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

const elapsed = (t0: number) => Math.round(performance.now() - t0);

// ---- one stack with an in-process runner ----

// A regression shows up as a stream that never ends: fail in 2 minutes, not the e2e default of 20.
describe("Execute over gRPC", { timeout: 120_000 }, () => {
  const INSTANCE = "e2e/exec";
  let stack: Stack;
  let c: ExecClients;
  let scratch = "";
  const pidFiles: string[] = [];
  /** Operations this block created, for ListOperations. */
  const created = new Set<string>();

  beforeAll(async () => {
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-grpc-exec-"));
    stack = await startStack({ runner: true });
    c = connectExec(stack.grpcTarget);
  });
  afterAll(async () => {
    c?.close();
    await stack?.stop();
    for (const f of pidFiles) await killSleepsIn(f);
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  /** A file outside the runner's work directory, for the action to leave traces in. */
  const traceFile = (name: string) => {
    const f = path.join(scratch, `${name}-${randomUUID()}`);
    pidFiles.push(f);
    return f;
  };

  it("runs an action: stage updates, then a done Operation with the result", async () => {
    const { digest } = await putAction(c, INSTANCE, { script: `cat input.txt; echo ran ${randomUUID()} >&2` });
    const w = execute(c, INSTANCE, digest);
    const last = await finalOf(w);
    created.add(last.name);
    expect(last.name).toMatch(/^operations\/[0-9a-f-]{36}$/);
    expect(w.ops.every((o) => o.name === last.name)).toBe(true);
    // QUEUED and EXECUTING (the stream may attach late and miss QUEUED), COMPLETED only at the end.
    const stages = w.ops.map((o) => o.stage);
    expect(stages.slice(0, -1).every((st) => st === "QUEUED" || st === "EXECUTING"), stages.join(" ")).toBe(true);
    expect(w.ops.filter((o) => o.done)).toHaveLength(1);
    expect(last.response.status?.code ?? OK).toBe(OK);
    expect(last.response.cachedResult).toBe(false);
    expect(last.response.result!.exitCode).toBe(0);
    expect(await readBlob(c, INSTANCE, last.response.result!.stdoutDigest)).toBe("input\n");

    // Again: an action cache hit, answered at once.
    const again = await finalOf(execute(c, INSTANCE, digest, { inline_stdout: true }));
    expect(again.response.cachedResult).toBe(true);
    expect(Buffer.from(again.response.result!.stdoutRaw).toString()).toBe("input\n");
  });

  it("missing inputs: FAILED_PRECONDITION with a google.rpc.PreconditionFailure MISSING violation per blob", async () => {
    const up = await putAction(c, INSTANCE, {
      script: "cat a.txt b.txt",
      inputs: { "a.txt": false, "b.txt": "present\n" },
      skipCommand: true,
    });
    expect(up.missing).toHaveLength(2);
    const err = await errorOf(execute(c, INSTANCE, up.digest).end);
    expect(grpc.status[err.code]).toBe("FAILED_PRECONDITION");
    const [bin] = err.metadata.get("grpc-status-details-bin") as Buffer[];
    expect(bin, "grpc-status-details-bin").toBeDefined();
    const status = fromBinary(StatusSchema, bin!);
    expect(status.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(status.details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/google.rpc.PreconditionFailure"]);
    const failure = fromBinary(PreconditionFailureSchema, status.details[0]!.value);
    const violations = failure.violations.map((v) => ({ type: v.type, subject: v.subject }));
    expect(violations.sort((a, b) => (a.subject < b.subject ? -1 : 1))).toEqual(
      up.missing.map((d) => ({ type: "MISSING", subject: `blobs/${d.hash}/${d.size_bytes}` })).sort((a, b) => (a.subject < b.subject ? -1 : 1)),
    );

    // A missing Action is one violation too.
    const ghost = digestOf(Buffer.from(`no such action ${randomUUID()}`));
    const err2 = await errorOf(execute(c, INSTANCE, ghost).end);
    expect(grpc.status[err2.code]).toBe("FAILED_PRECONDITION");
    const status2 = fromBinary(StatusSchema, (err2.metadata.get("grpc-status-details-bin") as Buffer[])[0]!);
    expect(fromBinary(PreconditionFailureSchema, status2.details[0]!.value).violations.map((v) => v.subject)).toEqual([
      `blobs/${ghost.hash}/${ghost.size_bytes}`,
    ]);
  });

  it("CancelOperation on a running `sleep 30`: the stream ends done with status CANCELLED and the process is gone", async () => {
    const pidFile = traceFile("cancel");
    const { digest } = await putAction(c, INSTANCE, { script: `echo $$ > ${pidFile}; exec sleep 30` });
    const w = execute(c, INSTANCE, digest);
    const { name } = await w.next((o) => o.stage === "EXECUTING");
    created.add(name);
    const pid = await eventually(async () => Number((await linesOf(pidFile))[0]) || undefined, 20_000, "the action to start");
    expect(await alive(pid)).toBe(true);

    const t0 = performance.now();
    await unary(c.operations, "CancelOperation", { name });
    const last = await finalOf(w);
    const cancelMs = elapsed(t0);
    expect(last.name).toBe(name);
    expect(last.response.status?.code).toBe(CANCELLED);
    expect(cancelMs).toBeLessThan(5_000);
    await eventually(async () => !(await alive(pid)), 2_000, `process ${pid} to be gone`);
    console.log(`[grpc-execution] cancel: stream done ${cancelMs} ms after CancelOperation`);

    // The operation stays readable as cancelled; cancelling again is fine.
    const got = decodeOp(await unary(c.operations, "GetOperation", { name }));
    expect(got.done).toBe(true);
    expect(got.response?.status?.code).toBe(CANCELLED);
    await unary(c.operations, "CancelOperation", { name });
  });

  it("Action.timeout 2 s on `sleep 30`: status DEADLINE_EXCEEDED, the stdout so far kept", async () => {
    const token = randomUUID();
    const { digest } = await putAction(c, INSTANCE, { script: `echo before sleeping ${token}; exec sleep 30`, timeoutSeconds: 2 });
    const t0 = performance.now();
    const w = execute(c, INSTANCE, digest);
    const last = await finalOf(w);
    const ms = elapsed(t0);
    created.add(last.name);
    expect(last.response.status?.code, last.response.status?.message).toBe(DEADLINE_EXCEEDED);
    expect(ms).toBeGreaterThanOrEqual(2_000);
    expect(ms).toBeLessThan(15_000);
    expect(await readBlob(c, INSTANCE, last.response.result?.stdoutDigest)).toBe(`before sleeping ${token}\n`);
    console.log(`[grpc-execution] timeout: done ${ms} ms after Execute (timeout 2 s)`);

    // Not cached: the same action runs again rather than coming from the action cache.
    const res = await errorOf(unary(c.ac, "GetActionResult", { instance_name: INSTANCE, action_digest: digest }));
    expect(grpc.status[res.code]).toBe("NOT_FOUND");
  });

  it("100 concurrent identical Executes share one run", async () => {
    const runs = traceFile("runs");
    const { digest } = await putAction(c, INSTANCE, { script: `echo $$ >> ${runs}; sleep 2; echo shared` });
    const t0 = performance.now();
    const streams = Array.from({ length: 100 }, () => execute(c, INSTANCE, digest));
    const finals = await Promise.all(streams.map(finalOf));
    const ms = elapsed(t0);
    expect(await linesOf(runs)).toHaveLength(1);
    for (const f of finals) {
      expect(f.response.status?.code ?? OK).toBe(OK);
      expect(f.response.result!.exitCode).toBe(0);
      expect(await readBlob(c, INSTANCE, f.response.result!.stdoutDigest)).toBe("shared\n");
    }
    // Those that joined the run in flight all follow one operation; any later ones hit the cache.
    const names = new Set(finals.filter((f) => !f.response.cachedResult).map((f) => f.name));
    expect(names.size).toBe(1);
    created.add([...names][0]!);
    const cached = finals.filter((f) => f.response.cachedResult).length;
    console.log(`[grpc-execution] dedup: 100 Executes done in ${ms} ms, 1 run, ${100 - cached} joined it, ${cached} cache hits`);
  });

  it("WaitExecution after the Execute stream was dropped follows the operation to completion", async () => {
    const runs = traceFile("wait");
    const { digest } = await putAction(c, INSTANCE, { script: `echo $$ >> ${runs}; sleep 3; echo waited` });
    const w = execute(c, INSTANCE, digest);
    const first = await w.next();
    created.add(first.name);
    expect(first.done).toBe(false);
    w.call.cancel();
    await expect(w.end).rejects.toMatchObject({ code: grpc.status.CANCELLED });

    const t0 = performance.now();
    const again = waitExecution(c, first.name);
    const now = await again.next();
    expect(now.name).toBe(first.name);
    // The server answers at once with the current state.
    expect(elapsed(t0)).toBeLessThan(2_000);
    const last = await finalOf(again);
    expect(last.name).toBe(first.name);
    expect(last.response.status?.code ?? OK).toBe(OK);
    expect(last.response.result!.exitCode).toBe(0);
    expect(await readBlob(c, INSTANCE, last.response.result!.stdoutDigest)).toBe("waited\n");
    expect(await linesOf(runs)).toHaveLength(1);

    // WaitExecution on a done operation: the final state at once; on an unknown one: NOT_FOUND.
    const done = await finalOf(waitExecution(c, first.name));
    expect(done.response.result!.exitCode).toBe(0);
    const missing = await errorOf(waitExecution(c, `operations/${randomUUID()}`).end);
    expect(grpc.status[missing.code]).toBe("NOT_FOUND");
  });

  it("ListOperations pages with page_size 2 without duplicates, and filters on done", async () => {
    // Enough finished operations, and one still running.
    for (let i = 0; created.size < 5; i++) {
      const { digest } = await putAction(c, INSTANCE, { script: `echo list ${i} ${randomUUID()}` });
      created.add((await finalOf(execute(c, INSTANCE, digest))).name);
    }
    const runningPid = traceFile("list-running");
    const { digest } = await putAction(c, INSTANCE, { script: `echo $$ > ${runningPid}; exec sleep 30` });
    const running = execute(c, INSTANCE, digest);
    const { name: runningName } = await running.next((o) => o.stage === "EXECUTING");

    const list = async (filter: string) => {
      const names: string[] = [];
      const pages: number[] = [];
      let token = "";
      do {
        const res = await unary(c.operations, "ListOperations", { name: "operations", filter, page_size: 2, page_token: token });
        pages.push(res.operations.length);
        for (const op of res.operations) {
          const d = decodeOp(op);
          if (filter === "done=true") expect(d.done, d.name).toBe(true);
          if (filter === "done=false") expect(d.done, d.name).toBe(false);
          names.push(d.name);
        }
        token = res.next_page_token;
        expect(pages.length).toBeLessThan(100);
      } while (token);
      return { names, pages };
    };
    try {
      const all = await list("");
      expect(all.pages.every((n) => n <= 2)).toBe(true);
      expect(all.pages.length).toBeGreaterThanOrEqual(3);
      expect(new Set(all.names).size, "no duplicates across pages").toBe(all.names.length);
      for (const name of [...created, runningName]) expect(all.names).toContain(name);

      const done = await list("done=true");
      expect(new Set(done.names).size).toBe(done.names.length);
      for (const name of created) expect(done.names).toContain(name);
      expect(done.names).not.toContain(runningName);

      const notDone = await list("done=false");
      expect(notDone.names).toContain(runningName);

      const bad = await errorOf(unary(c.operations, "ListOperations", { name: "operations", filter: "colour=blue" }));
      expect(grpc.status[bad.code]).toBe("INVALID_ARGUMENT");
    } finally {
      await unary(c.operations, "CancelOperation", { name: runningName });
      expect((await finalOf(running)).response.status?.code).toBe(CANCELLED);
    }
  });
});

// ---- a runner as a separate process, killed mid-action ----

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => s.once("error", reject).listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface RunnerProcess {
  child: ChildProcess;
  url: string;
  /** kill -9 of its whole process group (tsx and the node it starts). */
  kill9(): Promise<void>;
}

const children = new Set<ChildProcess>();

function killGroup(child: ChildProcess, signal: NodeJS.Signals) {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // already gone
  }
}

/** `tsx container/runner/main.ts` in its own process group, listening on `port`. */
async function spawnRunner(port: number, dir: string, id: string): Promise<RunnerProcess> {
  const child = spawn(path.join(ROOT, "node_modules/.bin/tsx"), ["container/runner/main.ts"], {
    cwd: ROOT,
    detached: true,
    env: {
      ...process.env,
      PATH: `${path.join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
      KILN_RUNNER_ID: id,
      KILN_RUNNER_PORT: String(port),
      KILN_RUNNER_CONCURRENCY: "2",
      KILN_RUNNER_KILL_GRACE_MS: "1000",
      KILN_RUNNER_WORK_DIR: path.join(dir, `work-${id}`),
      KILN_RUNNER_CACHE_DIR: path.join(dir, `cache-${id}`),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  exited.then(() => children.delete(child));
  let out = "";
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`runner ${id} did not start in 30 s:\n${out}`)), 30_000);
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) (clearTimeout(timer), resolve(m[1]!));
    });
    child.once("exit", (code, signal) => (clearTimeout(timer), reject(new Error(`runner ${id} exited (${code ?? signal}):\n${out}`))));
  }).catch((e) => {
    killGroup(child, "SIGKILL");
    throw e;
  });
  return {
    child,
    url,
    async kill9() {
      killGroup(child, "SIGKILL");
      await exited;
    },
  };
}

describe("Execute over gRPC with a runner that dies", { timeout: 120_000 }, () => {
  const INSTANCE = "e2e/exec-lost";
  let stack: Stack;
  let c: ExecClients;
  let scratch = "";
  let port = 0;
  const traceFiles: string[] = [];

  beforeAll(async () => {
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-grpc-lost-"));
    port = await freePort();
    // Queued operations give up 5 s after no runner answers (default 60 s), to keep this short.
    stack = await startStack({ vars: { RUNNER_URLS: `http://127.0.0.1:${port}`, NO_RUNNER_TIMEOUT_SECONDS: "5" } });
    c = connectExec(stack.grpcTarget);
  });
  afterEach(async () => {
    // Runners, even when a test failed; then what their killed actions left running.
    for (const child of children) killGroup(child, "SIGKILL");
    await eventually(async () => children.size === 0, 10_000, "runner processes to exit");
    for (const f of traceFiles) await killSleepsIn(f);
  });
  afterAll(async () => {
    c?.close();
    await stack?.stop();
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  /** Starts a runner, Executes a `sleep` action, and kills the runner once the action has run for `afterMs`. */
  async function killMidAction(id: string, { sleep = 5, afterMs = 0 } = {}) {
    const runner = await spawnRunner(port, scratch, id);
    expect(runner.url).toBe(`http://127.0.0.1:${port}`);
    const runs = path.join(scratch, `runs-${id}`);
    traceFiles.push(runs);
    const { digest } = await putAction(c, INSTANCE, { script: `echo $$ >> ${runs}; exec sleep ${sleep}` });
    const w = execute(c, INSTANCE, digest);
    const { name } = await w.next((o) => o.stage === "EXECUTING");
    await eventually(async () => (await linesOf(runs)).length === 1, 20_000, "the action to start");
    await new Promise((r) => setTimeout(r, afterMs));
    const t0 = performance.now();
    await runner.kill9();
    return { w, name, runs, killedAt: t0 };
  }

  it("the operation is re-queued when its runner is killed, and completes OK on a new runner", async () => {
    const { w, name, runs, killedAt } = await killMidAction("first");
    const t1 = performance.now();
    await spawnRunner(port, scratch, "second");
    const restartMs = elapsed(t1);
    const last = await finalOf(w);
    const ms = elapsed(killedAt);
    expect(last.name).toBe(name);
    expect(last.response.status?.code ?? OK, last.response.status?.message).toBe(OK);
    expect(last.response.result!.exitCode).toBe(0);
    expect(last.response.result!.executionMetadata!.worker).toMatch(/\/second$/);
    // Ran twice: once on the killed runner, once on the new one.
    expect(await linesOf(runs)).toHaveLength(2);
    // It went back to the queue in between.
    const stages = w.ops.map((o) => o.stage);
    expect(stages.lastIndexOf("QUEUED")).toBeGreaterThan(stages.indexOf("EXECUTING"));
    console.log(`[grpc-execution] runner killed: new runner up in ${restartMs} ms, operation done ${ms} ms after the kill (stages ${stages.join(" ")})`);
  });

  it("when no runner comes back, the operation completes with UNAVAILABLE in bounded time", async () => {
    const { w, name, killedAt } = await killMidAction("lonely");
    // Another client waiting on it must not hang either.
    const waiter = waitExecution(c, name);
    const last = await finalOf(w);
    const ms = elapsed(killedAt);
    expect(last.name).toBe(name);
    expect(last.response.status?.code, last.response.status?.message).toBe(UNAVAILABLE);
    expect(ms).toBeLessThan(60_000);
    const waited = await finalOf(waiter);
    expect(waited.response.status?.code).toBe(UNAVAILABLE);
    console.log(`[grpc-execution] runner gone: UNAVAILABLE ${ms} ms after the kill: ${last.response.status?.message}`);
  });

  // The worker caches runner statuses for 15 s. A runner that dies later than that is found
  // unreachable rather than lost again, so the operation is never dispatched (and never counts
  // attempts): it used to stay QUEUED for good. Now it completes UNAVAILABLE once no runner has
  // answered for NO_RUNNER_TIMEOUT_SECONDS.
  it("when the runner dies after its status went stale and none comes back, the operation still completes UNAVAILABLE", async () => {
    const { w, name, killedAt } = await killMidAction("stale", { sleep: 40, afterMs: 16_000 });
    const last = await finalOf(w);
    const ms = elapsed(killedAt);
    expect(last.name).toBe(name);
    expect(last.response.status?.code, last.response.status?.message).toBe(UNAVAILABLE);
    expect(last.response.status?.message).toMatch(/no runner has been reachable/);
    // Re-queued (2 s), found unreachable, then NO_RUNNER_TIMEOUT_SECONDS (5 s) at the scheduler's 5 s checks.
    expect(ms).toBeLessThan(30_000);
    console.log(`[grpc-execution] runner gone (stale status): UNAVAILABLE ${ms} ms after the kill: ${last.response.status?.message}`);
  });
});
