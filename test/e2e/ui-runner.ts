// A runner the test drives by hand, for watching an operation run in the browser: it dials the
// pool as a real runner does (WebSocket /v1/runners/connect with a runner key, then the
// RunnerService with the lease token) and accepts assignments, and the test decides what each
// one writes to its live stdout and when it completes. (The real runner is being moved onto this
// protocol; this one runs nothing.)
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  LogStream,
  Phase,
  PoolMessageSchema,
  RunnerMessageSchema,
  RunnerService,
  type Assignment,
} from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import type { Digest } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";

export const RUNNER_KEY = "ui-e2e-runner-key-0123456789abcdef-0123";
export const runnerKeysVar = () => JSON.stringify([{ name: "ui-e2e", key: RUNNER_KEY }]);

export interface HandRunner {
  /** The next assignment (already accepted). */
  assignment(): Promise<Assignment>;
  /** Appends to the assignment's live stdout. */
  stdout(a: Assignment, text: string): Promise<void>;
  /** Completes it with exit code 0 and `stdout` (a CAS digest the test stored). */
  complete(a: Assignment, stdout: Digest): Promise<void>;
  close(): void;
}

export async function connectHandRunner(httpUrl: string): Promise<HandRunner> {
  const ws = new WebSocket(`${httpUrl.replace(/^http/, "ws")}/v1/runners/connect?shard=0`, { headers: { authorization: `Bearer ${RUNNER_KEY}` } } as never);
  ws.binaryType = "arraybuffer";
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", () => reject(new Error("the runner could not connect")), { once: true });
  });
  const send = (kind: MessageInitShape<typeof RunnerMessageSchema>["kind"]) => ws.send(toBinary(RunnerMessageSchema, create(RunnerMessageSchema, { kind })));
  const waiting: ((a: Assignment) => void)[] = [];
  const queued: Assignment[] = [];
  const running = new Set<string>();
  const offsets = new Map<string, bigint>();
  ws.addEventListener("message", (ev) => {
    const msg = fromBinary(PoolMessageSchema, new Uint8Array(ev.data as ArrayBuffer));
    if (msg.kind.case !== "assignment") return;
    const a = msg.kind.value;
    send({ case: "accepted", value: { leaseId: a.leaseId } });
    running.add(a.leaseId);
    const w = waiting.shift();
    if (w) w(a);
    else queued.push(a);
  });
  const heartbeat = setInterval(() => {
    if (running.size) send({ case: "heartbeat", value: { running: [...running].map((leaseId) => ({ leaseId, phase: Phase.RUNNING })) } });
  }, 1000);
  send({ case: "hello", value: { runnerId: "ui-e2e-hand", slots: 1 } });
  const service = (a: Assignment) =>
    createClient(RunnerService, createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1", interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${a.token}`), next(req))] }));
  return {
    assignment: () => (queued.length ? Promise.resolve(queued.shift()!) : new Promise((r) => waiting.push(r))),
    async stdout(a, text) {
      const data = new TextEncoder().encode(text);
      const offset = offsets.get(a.leaseId) ?? 0n;
      await service(a).appendLog({ leaseId: a.leaseId, stream: LogStream.STDOUT, offset, data });
      offsets.set(a.leaseId, offset + BigInt(data.length));
    },
    async complete(a, stdout) {
      running.delete(a.leaseId);
      const r = await service(a).complete({ leaseId: a.leaseId, outcome: { case: "response", value: { result: { exitCode: 0, stdoutDigest: stdout } } } });
      if (!r.accepted) throw new Error(`the pool refused the result: ${r.reason}`);
    },
    close() {
      clearInterval(heartbeat);
      ws.close(1000, "bye");
    },
  };
}
