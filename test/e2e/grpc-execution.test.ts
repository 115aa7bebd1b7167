// Remote execution as a native gRPC client sees it: real @grpc/grpc-js clients (proto-loader, no
// generated code) through the h2c bridge (execution-client.ts), a real runner connected to the
// worker. Inputs are uploaded with BatchUpdateBlobs; then Execute, WaitExecution and
// google.longrunning.Operations: missing inputs, cancellation, timeouts, in-flight dedup, a
// runner killed mid-action (re-queued, or UNAVAILABLE when none comes back), reconnecting with
// WaitExecution, and ListOperations paging and filtering.
import { fromBinary } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.ts";
import { connectExec, decodeOp, execute, finalOf, putAction, readBlob, waitExecution, type ExecClients } from "./execution-client.ts";
import { digestOf, errorOf, grpc, unary } from "./grpc-client.ts";
import { startStack, type RunnerProcess, type Stack } from "./stack.ts";

// google.rpc.Code values, as ExecuteResponse.status carries them.
const OK = 0;
const CANCELLED = 1;
const DEADLINE_EXCEEDED = 4;
const UNAVAILABLE = 14;

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
    await fs.chmod(scratch, 0o777); // actions may run as another uid
    // No sandbox: these actions leave traces (pids, run counts) outside their work directories.
    stack = await startStack({ runner: { sandbox: "none" } });
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
    // The PreconditionFailure (besides the request id every error carries, as RequestInfo).
    const pf = status.details.filter((d) => d.typeUrl === "type.googleapis.com/google.rpc.PreconditionFailure");
    expect(pf).toHaveLength(1);
    const failure = fromBinary(PreconditionFailureSchema, pf[0]!.value);
    const violations = failure.violations.map((v) => ({ type: v.type, subject: v.subject }));
    expect(violations.sort((a, b) => (a.subject < b.subject ? -1 : 1))).toEqual(
      up.missing.map((d) => ({ type: "MISSING", subject: `blobs/${d.hash}/${d.size_bytes}` })).sort((a, b) => (a.subject < b.subject ? -1 : 1)),
    );

    // A missing Action is one violation too.
    const ghost = digestOf(Buffer.from(`no such action ${randomUUID()}`));
    const err2 = await errorOf(execute(c, INSTANCE, ghost).end);
    expect(grpc.status[err2.code]).toBe("FAILED_PRECONDITION");
    const status2 = fromBinary(StatusSchema, (err2.metadata.get("grpc-status-details-bin") as Buffer[])[0]!);
    const pf2 = status2.details.find((d) => d.typeUrl === "type.googleapis.com/google.rpc.PreconditionFailure")!;
    expect(fromBinary(PreconditionFailureSchema, pf2.value).violations.map((v) => v.subject)).toEqual([
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

    const list = async (filter: string, strict = true) => {
      const names: string[] = [];
      const pages: number[] = [];
      let token = "";
      do {
        const res = await unary(c.operations, "ListOperations", { name: "operations", filter, page_size: 2, page_token: token });
        pages.push(res.operations.length);
        for (const op of res.operations) {
          const d = decodeOp(op);
          if (strict && filter === "done=true") expect(d.done, d.name).toBe(true);
          if (strict && filter === "done=false") expect(d.done, d.name).toBe(false);
          names.push(d.name);
        }
        token = res.next_page_token;
        expect(pages.length).toBeLessThan(100);
      } while (token);
      return { names, pages };
    };
    try {
      // The D1 listing is written from each operation's alarm, a moment after its last change:
      // wait until it shows every operation (and the running one as not done).
      const until = Date.now() + 15_000;
      for (;;) {
        // Not strict while waiting: the listing's done flag may still lag the operation's own.
        const [everything, open, finished] = [await list("", false), await list("done=false", false), await list("done=true", false)];
        const ok =
          [...created, runningName].every((n) => everything.names.includes(n)) &&
          open.names.includes(runningName) &&
          [...created].every((n) => finished.names.includes(n));
        if (ok || Date.now() > until) break;
        await new Promise((r) => setTimeout(r, 200));
      }
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

describe("Execute over gRPC with a runner that dies", { timeout: 120_000 }, () => {
  const INSTANCE = "e2e/exec-lost";
  let stack: Stack;
  let c: ExecClients;
  let scratch = "";
  const traceFiles: string[] = [];
  const runners: RunnerProcess[] = [];

  /** `kiln runner` in a child process, connected to the stack; no sandbox, so traces outside are written. */
  async function spawnRunner(id: string) {
    const r = await stack.spawnRunner({ id, args: ["--sandbox", "none", "--kill-grace-ms", "1000"] });
    runners.push(r);
    return r;
  }

  beforeAll(async () => {
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-grpc-lost-"));
    await fs.chmod(scratch, 0o777); // actions may run as another uid
    // Queued operations give up 5 s after no runner is connected (default 60 s), to keep this short.
    stack = await startStack({ vars: { NO_RUNNER_TIMEOUT_SECONDS: "5" } });
    c = connectExec(stack.grpcTarget);
  });
  afterEach(async () => {
    // Runners, even when a test failed; then what their killed actions left running.
    for (const r of runners.splice(0)) await r.kill9();
    for (const f of traceFiles) await killSleepsIn(f);
  });
  afterAll(async () => {
    c?.close();
    await stack?.stop();
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  /** Starts a runner, Executes a `sleep` action, and kills the runner once the action has run for `afterMs`. */
  async function killMidAction(id: string, { sleep = 5 } = {}) {
    const runner = await spawnRunner(id);
    const runs = path.join(scratch, `runs-${id}`);
    traceFiles.push(runs);
    const { digest } = await putAction(c, INSTANCE, { script: `echo $$ >> ${runs}; exec sleep ${sleep}` });
    const w = execute(c, INSTANCE, digest);
    const { name } = await w.next((o) => o.stage === "EXECUTING");
    await eventually(async () => (await linesOf(runs)).length === 1, 20_000, "the action to start");
    const t0 = performance.now();
    await runner.kill9();
    return { w, name, runs, killedAt: t0 };
  }

  it("the operation is re-queued when its runner is killed, and completes OK on a new runner", async () => {
    const { w, name, runs, killedAt } = await killMidAction("first");
    const t1 = performance.now();
    await spawnRunner("second");
    const restartMs = elapsed(t1);
    const last = await finalOf(w);
    const ms = elapsed(killedAt);
    expect(last.name).toBe(name);
    expect(last.response.status?.code ?? OK, last.response.status?.message).toBe(OK);
    expect(last.response.result!.exitCode).toBe(0);
    expect(last.response.result!.executionMetadata!.worker).toMatch(/^second\b/);
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
});
