// A scripted runner for the workerd tests of remote execution. It dials the pool exactly as the
// real runner does (WebSocket to /v1/runners/connect with a runner key; RunnerService with the
// lease token) but runs nothing: what it does with each assignment is chosen by the instance
// name, which must contain an "exec" segment followed by a behaviour ("exec/sleep-3000/<unique>"):
//
//   ok              completes at once: exit code 0
//   sleep-<ms>      completes after <ms> (Cancel ends it early with status CANCELLED)
//   exit-<n>        completes at once: exit code <n>
//   timeout         waits the assignment's timeout (at most 5 s), then DEADLINE_EXCEEDED with a
//                   result that keeps its stdout digest
//   lost            accepts and then goes silent (no heartbeat, no result), every time
//   busy-<n>        refuses the first <n> assignments of an operation, then ok
//   busy-<n>+lost-<m>  refuses <n> times, then goes silent <m> times, then ok
//   reject-412      completes with error FAILED_PRECONDITION and a MISSING violation
//   bad-output      exit code 0 but status FAILED_PRECONDITION (an output could not be collected)
//   log-<ms>        appends "line <i>\n" to stdout every 50 ms for <ms>, then completes
//   outputs-<n>     completes at once with <n> output files (out, out-1, ...), all the "out" blob
//
// Results reference stdout `stdout of <action hash>\n` and one output file "out" with contents
// `output of <action hash>\n`; a test uploads those blobs itself (as a real runner would).
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { SELF } from "cloudflare:test";
import { ActionResultSchema, ExecuteResponseSchema, OutputFileSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import {
  AcceptedSchema,
  HeartbeatSchema,
  HelloSchema,
  LogStream,
  Phase,
  ProgressSchema,
  ReadySchema,
  RefusedSchema,
  PoolMessageSchema,
  RunnerMessageSchema,
  RunnerService,
  type Assignment,
  type PoolMessage,
  type RunnerMessage,
} from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { grpcWebClient } from "./helpers.ts";

import { TEST_RUNNER_KEY } from "./runner-key.ts";

export interface Attempt {
  seq: number;
  runner: string;
  operation: string;
  instanceName: string;
  behaviour: string;
  actionHash: string;
  timeoutMs: number;
  attempt: number;
  leaseId: string;
  token: string;
  startedAt: number;
  endedAt?: number;
  outcome: "running" | "ok" | "exit" | "deadline" | "cancelled" | "busy" | "lost" | "rejected" | "dropped";
}

/** Every assignment any fake runner received, in arrival order (module state: one isolate). */
export const attempts: Attempt[] = [];
const perOperation = new Map<string, number>();
let seq = 0;

const sha256 = async (s: string) =>
  [...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)))].map((b) => b.toString(16).padStart(2, "0")).join("");
const digestOf = async (s: string) => ({ hash: await sha256(s), sizeBytes: BigInt(new TextEncoder().encode(s).byteLength) });

async function resultFor(hash: string, exitCode: number) {
  return create(ActionResultSchema, {
    exitCode,
    stdoutDigest: await digestOf(`stdout of ${hash}\n`),
    outputFiles: [{ path: "out", digest: await digestOf(`output of ${hash}\n`) }],
  });
}

function behaviourOf(instanceName: string): string {
  const segs = instanceName.split("/");
  const i = segs.indexOf("exec");
  return i >= 0 && segs[i + 1] ? segs[i + 1]! : "ok";
}

export interface FakeRunnerOptions {
  id?: string;
  slots?: number;
  properties?: [string, string][];
  key?: string;
  shard?: number;
}

export interface FakeRunner {
  id: string;
  /** Leases running now. */
  running(): Attempt[];
  /** Dies: closes the connection and abandons its actions (their leases expire). */
  close(): void;
  /** Cancels reported by the pool, by lease id. */
  cancels: string[];
  /** How often the connection dropped and was dialled again. */
  reconnects(): number;
}

async function dial(o: FakeRunnerOptions): Promise<WebSocket> {
  const res = await SELF.fetch(`http://kiln/v1/runners/connect?shard=${o.shard ?? 0}`, {
    headers: { upgrade: "websocket", authorization: `Bearer ${o.key ?? TEST_RUNNER_KEY}` },
  });
  const ws = res.webSocket;
  if (!ws) throw new Error(`runner connect answered ${res.status}: ${await res.text()}`);
  ws.accept();
  return ws;
}

export async function connectRunner(o: FakeRunnerOptions = {}): Promise<FakeRunner> {
  const id = o.id ?? `fake-${crypto.randomUUID().slice(0, 8)}`;
  const slots = o.slots ?? 2;
  let ws = await dial(o);
  let closing = false;
  const live = new Map<string, { attempt: Attempt; stop: (why: "cancelled" | "abandoned") => void; silent: boolean }>();
  const refusedSince = { value: false };
  const cancels: string[] = [];
  const send = (kind: RunnerMessage["kind"]) => ws.send(toBinary(RunnerMessageSchema, create(RunnerMessageSchema, { kind })));
  const heartbeatMs = 200; // vitest.config.mts: RUNNER_HEARTBEAT_SECONDS 0.2
  const heartbeat = setInterval(() => {
    const running = [...live.values()].filter((l) => !l.silent).map((l) => create(ProgressSchema, { leaseId: l.attempt.leaseId, phase: Phase.RUNNING }));
    if (running.length) {
      try {
        send({ case: "heartbeat", value: create(HeartbeatSchema, { running }) });
      } catch {
        // closed
      }
    }
  }, heartbeatMs);

  const service = (token: string) => grpcWebClient(RunnerService, { authorization: `Bearer ${token}` });

  const end = (a: Attempt, outcome: Attempt["outcome"]) => {
    a.outcome = outcome;
    a.endedAt = Date.now();
    live.delete(a.leaseId);
    if (refusedSince.value) {
      refusedSince.value = false;
      try {
        send({ case: "ready", value: create(ReadySchema, { freeSlots: slots - live.size }) });
      } catch {
        // closed
      }
    }
  };

  async function complete(a: Attempt, outcome: Attempt["outcome"], body: { case: "response"; value: ReturnType<typeof create<typeof ExecuteResponseSchema>> } | { case: "error"; value: { code: number; message: string; details?: never[] } }) {
    end(a, outcome);
    try {
      const r = await service(a.token).complete({ leaseId: a.leaseId, outcome: body as never });
      if (!r.accepted) a.outcome = "dropped";
    } catch (e) {
      a.outcome = "dropped";
      console.warn("fake runner: Complete failed", String(e));
    }
  }

  async function run(asg: Assignment) {
    const behaviour = behaviourOf(asg.instanceName);
    const n = (perOperation.get(asg.operation) ?? 0) + 1;
    perOperation.set(asg.operation, n);
    const timeoutMs = Number(asg.timeout?.seconds ?? 0n) * 1000 + Math.floor((asg.timeout?.nanos ?? 0) / 1e6);
    const a: Attempt = {
      seq: ++seq,
      runner: id,
      operation: asg.operation,
      instanceName: asg.instanceName,
      behaviour,
      actionHash: asg.actionDigest?.hash ?? "",
      timeoutMs,
      attempt: asg.attempt,
      leaseId: asg.leaseId,
      token: asg.token,
      startedAt: Date.now(),
      outcome: "running",
    };
    attempts.push(a);
    let busy = 0;
    let lost = 0;
    for (const part of behaviour.split("+")) {
      const m = /^(busy|lost)-(\d+)$/.exec(part);
      if (m) (m[1] === "busy" ? (busy = Number(m[2])) : (lost = Number(m[2])));
    }
    if (behaviour === "lost") lost = Infinity;
    if (n <= busy || live.size >= slots) {
      a.outcome = "busy";
      a.endedAt = Date.now();
      refusedSince.value = true;
      return send({ case: "refused", value: create(RefusedSchema, { leaseId: asg.leaseId, reason: "busy", freeSlots: Math.max(0, slots - live.size) }) });
    }
    let stop: (why: "cancelled" | "abandoned") => void = () => {};
    const stopped = new Promise<"cancelled" | "abandoned">((r) => (stop = r));
    live.set(asg.leaseId, { attempt: a, stop, silent: n <= busy + lost });
    send({ case: "accepted", value: create(AcceptedSchema, { leaseId: asg.leaseId }) });
    if (n <= busy + lost) {
      a.outcome = "lost";
      live.delete(asg.leaseId); // silent from now on, and not holding a slot: the lease expires
      return;
    }
    const hash = a.actionHash;
    if (behaviour === "reject-412") {
      const pf = create(PreconditionFailureSchema, { violations: [{ type: "MISSING", subject: `blobs/${await sha256("vanished")}/8`, description: "gone" }] });
      return complete(a, "rejected", { case: "error", value: { code: Code.FailedPrecondition, message: "an input vanished from the CAS", details: [anyPack(PreconditionFailureSchema, pf)] as never } });
    }
    if (behaviour === "bad-output") {
      return complete(a, "exit", {
        case: "response",
        value: create(ExecuteResponseSchema, { result: await resultFor(hash, 0), status: { code: Code.FailedPrecondition, message: "output file out is a directory" } }),
      });
    }
    const many = /^outputs-(\d+)$/.exec(behaviour);
    if (many) {
      const result = await resultFor(hash, 0);
      const out = result.outputFiles[0]!;
      result.outputFiles = Array.from({ length: Number(many[1]) }, (_, i) => create(OutputFileSchema, { path: i ? `out-${String(i).padStart(6, "0")}` : "out", digest: out.digest }));
      return complete(a, "ok", { case: "response", value: create(ExecuteResponseSchema, { result }) });
    }
    const exit = /^exit-(\d+)$/.exec(behaviour);
    if (exit) return complete(a, "exit", { case: "response", value: create(ExecuteResponseSchema, { result: await resultFor(hash, Number(exit[1])) }) });
    const sleep = /^sleep-(\d+)$/.exec(behaviour);
    const log = /^log-(\d+)$/.exec(behaviour);
    const waitMs = behaviour === "timeout" ? Math.min(timeoutMs, 5000) : sleep ? Number(sleep[1]) : log ? Number(log[1]) : 0;
    let logTimer: ReturnType<typeof setInterval> | undefined;
    if (log) {
      let offset = 0;
      let i = 0;
      logTimer = setInterval(() => {
        const data = new TextEncoder().encode(`line ${i++}\n`);
        const at = offset;
        offset += data.byteLength;
        void service(a.token).appendLog({ leaseId: a.leaseId, stream: LogStream.STDOUT, offset: BigInt(at), data }).catch(() => {});
      }, 50);
    }
    const why = await Promise.race([stopped, new Promise<"done">((r) => setTimeout(() => r("done"), waitMs))]);
    if (logTimer) clearInterval(logTimer);
    if (why === "abandoned") {
      a.outcome = "lost";
      a.endedAt = Date.now();
      return; // the process "died": no result
    }
    if (why === "cancelled") {
      return complete(a, "cancelled", { case: "response", value: create(ExecuteResponseSchema, { result: await resultFor(hash, 137), status: { code: Code.Canceled, message: "the action was cancelled" } }) });
    }
    if (behaviour === "timeout") {
      return complete(a, "deadline", {
        case: "response",
        value: create(ExecuteResponseSchema, { result: await resultFor(hash, 137), status: { code: Code.DeadlineExceeded, message: `the action exceeded its timeout of ${timeoutMs / 1000} s` } }),
      });
    }
    return complete(a, "ok", { case: "response", value: create(ExecuteResponseSchema, { result: await resultFor(hash, 0) }) });
  }

  const listen = (socket: WebSocket) => {
    socket.addEventListener("message", (ev) => {
      if (typeof ev.data === "string") return;
      // workerd hands a client-side socket's binary frames over as Blobs.
      const data = ev.data instanceof Blob ? ev.data.arrayBuffer() : Promise.resolve(ev.data as ArrayBuffer);
      void data.then((d) => onMessage(fromBinary(PoolMessageSchema, new Uint8Array(d))));
    });
    // A dropped connection is dialled again (as the real runner does), naming the leases it runs.
    socket.addEventListener("close", () => {
      if (closing) return;
      reconnects++;
      void dial(o).then((next) => {
        ws = next;
        listen(ws);
        hello([...live.values()].filter((l) => !l.silent).map((l) => l.attempt.leaseId));
      });
    });
  };
  let reconnects = 0;
  const onMessage = (msg: PoolMessage) => {
    switch (msg.kind.case) {
      case "welcome":
        break;
      case "assignment":
        run(msg.kind.value).catch((e) => console.error("fake runner failed", e));
        break;
      case "cancel": {
        cancels.push(msg.kind.value.leaseId);
        live.get(msg.kind.value.leaseId)?.stop("cancelled");
        break;
      }
    }
  };
  const hello = (runningLeaseIds: string[]) =>
    send({ case: "hello", value: create(HelloSchema, { runnerId: id, slots, runningLeaseIds, properties: (o.properties ?? []).map(([name, value]) => ({ name, value })) }) });
  listen(ws);
  hello([]);
  return {
    id,
    cancels,
    running: () => [...live.values()].map((l) => l.attempt),
    reconnects: () => reconnects,
    close() {
      closing = true;
      clearInterval(heartbeat);
      for (const l of live.values()) (l.silent = true), l.stop("abandoned");
      try {
        ws.close(1000, "bye");
      } catch {
        // already closed
      }
    },
  };
}

/** Assignments received, filtered; and the most of one instance that ran at once. */
export function runs(q: { operation?: string; action?: string; instance?: string }) {
  const list = attempts.filter(
    (a) => (!q.operation || a.operation === q.operation) && (!q.action || a.actionHash === q.action) && (!q.instance || a.instanceName === q.instance),
  );
  const events = list.filter((a) => a.outcome !== "busy").flatMap((a) => [[a.startedAt, 1] as const, [a.endedAt ?? Infinity, -1] as const]);
  events.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let now = 0;
  let max = 0;
  for (const [, d] of events) max = Math.max(max, (now += d));
  return { attempts: list, maxConcurrent: list.length ? max : null };
}
