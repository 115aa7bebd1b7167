// Shared by the execution-*.test.ts files: clients, test actions and stream checks for remote
// execution over real Durable Objects, R2 and D1, with actions "run" by scripted runners that dial
// the pool (fake-runner.ts). The instance name picks the behaviour: "exec/<behaviour>/<unique>".
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { expect } from "vitest";
import {
  ActionCache,
  ActionSchema,
  CommandSchema,
  ContentAddressableStorage,
  DirectorySchema,
  ExecuteOperationMetadataSchema,
  ExecuteResponseSchema,
  Execution,
  ExecutionStage_Value,
  type ExecuteRequestSchema,
  type ExecuteResponse,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { Operations, type Operation } from "../../src/gen/google/longrunning/operations_pb.ts";
import { connectRunner, runs, type FakeRunner } from "./fake-runner.ts";
import { bytes, digestOf, grpcWebClient } from "./helpers.ts";

// Binary gRPC-web, as Bazel's gRPC reaches the worker through the bridge.
export const cas = grpcWebClient(ContentAddressableStorage);
export const ac = grpcWebClient(ActionCache);
export const exec = grpcWebClient(Execution);
export const ops = grpcWebClient(Operations);

/** Slots of the shared test runner. */
export const CAPACITY = 2;
let shared: Promise<FakeRunner> | undefined;
/**
 * Each test file's actions ask for platform property suite=<this isolate's id>, and its runner
 * offers it, so runners of test files running beside it never take its work.
 */
export const SUITE = crypto.randomUUID().slice(0, 8);
/** The runner every test of one file shares. */
export const sharedRunner = () =>
  (shared ??= connectRunner({ id: `shared-${SUITE}`, slots: CAPACITY, properties: [["suite", SUITE], ["OSFamily", "linux"], ["arch", "x86_64"], ["arch", "arm64"]] }));
export { runs };
export const { QUEUED, EXECUTING, COMPLETED } = ExecutionStage_Value;

export type Digest = { hash: string; sizeBytes: bigint };

export async function upload(...blobs: (Uint8Array | string)[]): Promise<Digest[]> {
  const reqs = await Promise.all(
    blobs.map(async (b) => {
      const data = typeof b === "string" ? bytes(b) : b;
      return { digest: await digestOf(data), data };
    }),
  );
  const res = await cas.batchUpdateBlobs({ requests: reqs });
  for (const r of res.responses) expect(r.status?.code ?? 0).toBe(0);
  return reqs.map((r) => r.digest);
}

export const instanceFor = (behaviour: string) => `exec/${behaviour}/${crypto.randomUUID().slice(0, 8)}`;

export interface ActionOptions {
  instanceName?: string;
  doNotCache?: boolean;
  timeoutSeconds?: number;
  platform?: [string, string][];
  /** The suite platform property (default: this file's SUITE, which its shared runner offers). */
  suite?: string;
}

export interface TestAction {
  instanceName: string;
  digest: Digest;
  hash: string;
}

/**
 * Uploads a fresh Action (unique Command) and its input tree, and the blobs the stand-in's result
 * will reference (as a real runner would upload them), so that result can be served from the cache.
 */
export async function newAction(behaviour: string, o: ActionOptions = {}): Promise<TestAction> {
  const instanceName = o.instanceName ?? instanceFor(behaviour);
  const [input] = await upload(`input ${crypto.randomUUID()}`);
  const commandBytes = toBinary(CommandSchema, create(CommandSchema, { arguments: ["/bin/echo", crypto.randomUUID()], outputPaths: ["out"] }));
  const rootBytes = toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: "in.txt", digest: input }] }));
  const [commandDigest, rootDigest] = await upload(commandBytes, rootBytes);
  const actionBytes = toBinary(
    ActionSchema,
    create(ActionSchema, {
      commandDigest,
      inputRootDigest: rootDigest,
      doNotCache: o.doNotCache ?? false,
      timeout: o.timeoutSeconds !== undefined ? { seconds: BigInt(o.timeoutSeconds) } : undefined,
      platform: { properties: [["suite", o.suite ?? SUITE] as [string, string], ...(o.platform ?? [])].map(([name, value]) => ({ name, value })) },
    }),
  );
  const [digest] = await upload(actionBytes);
  await upload(`stdout of ${digest!.hash}\n`, `output of ${digest!.hash}\n`);
  return { instanceName, digest: digest!, hash: digest!.hash };
}

export type ExecuteExtra = Omit<MessageInitShape<typeof ExecuteRequestSchema>, "$typeName" | "instanceName" | "actionDigest">;
export const request = (a: TestAction, extra: ExecuteExtra = {}) => ({ instanceName: a.instanceName, actionDigest: a.digest, ...extra });

export const stageOf = (op: Operation) => anyUnpack(op.metadata!, ExecuteOperationMetadataSchema)!.stage;
export const responseOf = (op: Operation): ExecuteResponse => {
  expect(op.result.case).toBe("response");
  return anyUnpack(op.result.value as never, ExecuteResponseSchema)!;
};

/** What every Operation of an execution must look like (REAPI overlays on google.longrunning). */
export function checkShape(op: Operation, digest?: Digest) {
  expect(op.name).toMatch(/^operations\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  expect(op.result.case).not.toBe("error");
  const meta = anyUnpack(op.metadata!, ExecuteOperationMetadataSchema)!;
  expect(meta).toBeDefined();
  if (digest) expect(meta.actionDigest?.hash).toBe(digest.hash);
  // done if and only if COMPLETED, and then with a response.
  expect(op.done).toBe(meta.stage === COMPLETED);
  expect(op.result.case).toBe(op.done ? "response" : undefined);
}

/** Every Operation an Execute (or WaitExecution) stream yields, checked. */
export async function drain(stream: AsyncIterable<Operation>, digest?: Digest): Promise<Operation[]> {
  const out: Operation[] = [];
  for await (const op of stream) {
    checkShape(op, digest);
    out.push(op);
  }
  expect(out.length).toBeGreaterThan(0);
  out.slice(0, -1).forEach((op) => expect(op.done).toBe(false));
  expect(out[out.length - 1]!.done).toBe(true);
  return out;
}

export const executeAll = (a: TestAction, extra: ExecuteExtra = {}) => drain(exec.execute(request(a, extra)), a.digest);

/** The first Operation of a stream, and the rest of it for later. */
export async function firstOf(stream: AsyncIterable<Operation>) {
  const it = stream[Symbol.asyncIterator]();
  const first = await it.next();
  expect(first.done).toBe(false);
  checkShape(first.value);
  const rest = (async () => {
    const out: Operation[] = [first.value];
    for (;;) {
      const n = await it.next();
      if (n.done) return out;
      checkShape(n.value);
      out.push(n.value);
    }
  })();
  return { first: first.value as Operation, rest };
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until runners run `n` actions of the instance; returns their attempts. */
export const runningOn = (instance: string, n: number) =>
  waitFor(`${n} running on ${instance}`, async () => {
    const r = runs({ instance }).attempts.filter((a) => a.outcome === "running");
    return r.length >= n && r;
  });

export const opStub = (name: string) => env.OPERATION.get(env.OPERATION.idFromName(name));

/** The D1 listing is written from each operation's alarm, just after a change; run it now. */
export async function indexed(...names: string[]) {
  for (const name of names) await runDurableObjectAlarm(opStub(name));
}
