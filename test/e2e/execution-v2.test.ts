// Execution v2 end to end: real `kiln runner` processes that connect out to a real worker (wrangler
// dev) with a runner key, driven by a native gRPC client through the bridge. Runners hold no
// listening socket; a runner SIGKILLed mid-action loses its lease and the action is re-queued and
// completed by another runner; an action that rewrites its input in place cannot poison the next
// action with that input; live stdout is readable with ByteStream Read while the action runs.
import { createHash, randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connectExec, execute, finalOf, putAction, readBlob, waitExecution, type ExecClients, type Watch } from "./execution-client.ts";
import { unary } from "./grpc-client.ts";
import { startStack, type RunnerProcess, type Stack } from "./stack.ts";
import { tcpSockets } from "../runner/listening-sockets.ts";

const INSTANCE = "e2e/exec-v2";
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** Reads a ByteStream resource until `pred` holds for what arrived; resolves with it (the call goes on until cancelled). */
function readUntil(c: ExecClients, resourceName: string, pred: (text: string) => boolean) {
  const call = c.bytestream.Read({ resource_name: resourceName, read_offset: 0, read_limit: 0 });
  let text = "";
  let ended = false;
  const found = new Promise<string>((resolve, reject) => {
    call.on("data", (m: { data: Buffer }) => {
      text += Buffer.from(m.data).toString();
      if (pred(text)) resolve(text);
    });
    call.on("error", (e: Error) => (ended ? undefined : reject(e)));
    call.on("end", () => ((ended = true), pred(text) ? resolve(text) : reject(new Error(`stream ended with ${JSON.stringify(text)}`))));
  });
  return { found, text: () => text, cancel: () => ((ended = true), call.cancel()) };
}

/** The live stdout stream of an executing operation, once the worker names it. */
async function stdoutStreamOf(w: Watch): Promise<string> {
  const op = await w.next((o) => o.stage === "EXECUTING" && o.stdoutStreamName !== "");
  return op.stdoutStreamName;
}

describe("Execution v2: runners that connect out", { timeout: 180_000 }, () => {
  let stack: Stack;
  let c: ExecClients;
  const runners: RunnerProcess[] = [];

  beforeAll(async () => {
    stack = await startStack();
    c = connectExec(stack.grpcTarget);
  });
  afterEach(async () => {
    for (const r of runners.splice(0)) await r.kill9();
  });
  afterAll(async () => {
    c?.close();
    await stack?.stop();
  });

  async function runner(id: string, slots = 2) {
    const r = await stack.spawnRunner({ id, slots });
    runners.push(r);
    return r;
  }

  it("a runner process connects out, holds no listening TCP socket, and runs actions", async () => {
    const r = await runner("outbound");
    const sockets = tcpSockets(r.pid);
    expect(sockets.filter((s) => !s.listening).length, "its connection to the worker").toBeGreaterThan(0);
    expect(sockets.filter((s) => s.listening)).toEqual([]);
    const token = randomUUID();
    const { digest } = await putAction(c, INSTANCE, { script: `echo hello ${token}` });
    const last = await finalOf(execute(c, INSTANCE, digest));
    expect(last.response.status?.code ?? 0, last.response.status?.message).toBe(0);
    expect(await readBlob(c, INSTANCE, last.response.result?.stdoutDigest)).toBe(`hello ${token}\n`);
    expect(last.response.result!.executionMetadata!.worker).toMatch(/^outbound\b/);
    // Still nothing listening after it has worked.
    expect(tcpSockets(r.pid).filter((s) => s.listening)).toEqual([]);
  });

  it("live stdout is readable with ByteStream Read while the action runs", async () => {
    await runner("live");
    const token = randomUUID();
    const { digest } = await putAction(c, INSTANCE, { script: `echo first ${token}; exec sleep 60` });
    const w = execute(c, INSTANCE, digest);
    const stream = await stdoutStreamOf(w);
    expect(stream).toMatch(/\/stdout$/);
    const reader = readUntil(c, stream, (t) => t.includes(`first ${token}`));
    expect(await reader.found).toBe(`first ${token}\n`);
    // Read while running: the operation has not completed.
    expect(w.ops.some((o) => o.done)).toBe(false);
    reader.cancel();
    await unary(c.operations, "CancelOperation", { name: w.ops[0]!.name });
    expect((await finalOf(w)).response.status?.code).toBe(1);
  });

  it("a runner SIGKILLed mid-action: the action is re-queued and completed by a second runner", async () => {
    const first = await runner("doomed", 1);
    const token = randomUUID();
    const { digest } = await putAction(c, INSTANCE, { script: `echo started ${token}; sleep 3; echo finished ${token}` });
    const w = execute(c, INSTANCE, digest);
    // It is running on the first runner once its live stdout shows the first line.
    const reader = readUntil(c, await stdoutStreamOf(w), (t) => t.includes(`started ${token}`));
    await reader.found;
    reader.cancel();
    await first.kill9();
    await runner("rescuer", 1);
    // A client that loses its Execute stream follows the operation with WaitExecution (as Bazel
    // does); the worker may end the stream while the operation goes back to the queue.
    const name = w.ops[0]!.name;
    const aborted = await w.end.then(
      () => undefined,
      (e: Error) => e.message,
    );
    if (aborted) console.warn(`[execution-v2] the Execute stream ended (${aborted}) after the runner was killed; following with WaitExecution`);
    const follow = aborted ? waitExecution(c, name) : w;
    const last = await finalOf(follow);
    expect(last.name).toBe(name);
    expect(last.response.status?.code ?? 0, last.response.status?.message).toBe(0);
    expect(last.response.result!.exitCode).toBe(0);
    expect(last.response.result!.executionMetadata!.worker).toMatch(/^rescuer\b/);
    expect(await readBlob(c, INSTANCE, last.response.result?.stdoutDigest)).toBe(`started ${token}\nfinished ${token}\n`);
    // It went back to the queue after it had started executing (seen when the stream lasted).
    const stages = w.ops.map((o) => o.stage);
    if (!aborted) expect(stages.lastIndexOf("QUEUED"), stages.join(" ")).toBeGreaterThan(stages.indexOf("EXECUTING"));
  });

  it("an action rewriting its input in place cannot poison the next action with the same input digest", async () => {
    await runner("shared", 1); // one runner, one slot: both actions share its file cache
    const original = `original ${randomUUID()}\n`;
    const attack = await putAction(c, INSTANCE, {
      inputs: { "in.txt": original },
      script: "chmod 666 in.txt; echo poisoned > in.txt; printf POISON | dd of=in.txt conv=notrunc 2>/dev/null; cat in.txt; true",
    });
    const a = await finalOf(execute(c, INSTANCE, attack.digest));
    expect(a.response.result!.exitCode).toBe(0);
    const check = await putAction(c, INSTANCE, { inputs: { "in.txt": original }, script: "sha256sum in.txt" });
    const b = await finalOf(execute(c, INSTANCE, check.digest));
    expect(await readBlob(c, INSTANCE, b.response.result?.stdoutDigest)).toBe(`${sha256(original)}  in.txt\n`);
  });
});
