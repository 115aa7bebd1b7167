// The runner pool (RunnerPoolDO) and its protocol: runners dial in with a runner key, take work
// over their connection and renew leases with heartbeats; lost leases re-queue, late results are
// dropped, capacity is per runner across queues, and an injected failure at any cross-object call
// leaves nothing stuck, lost or doubled.
import { Code } from "@connectrpc/connect";
import { SELF, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { ContentAddressableStorage, Execution } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { Operations } from "../../src/gen/google/longrunning/operations_pb.ts";
import { LogStream, RunnerService } from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { armFault, clearFaults } from "../../src/execution/faults.ts";
import { PART_BYTES } from "../../src/execution/stored-parts.ts";
import { connectRunner, runs } from "./fake-runner.ts";
import { errorOf, grpcWebClient } from "./helpers.ts";
import {
  COMPLETED,
  EXECUTING,
  QUEUED,
  SUITE,
  drain,
  exec,
  executeAll,
  firstOf,
  instanceFor,
  newAction,
  opStub,
  ops,
  request,
  responseOf,
  runningOn,
  sharedRunner,
  stageOf,
  waitFor,
} from "./execution-helpers.ts";

const pool = () => env.RUNNER_POOL.get(env.RUNNER_POOL.idFromName("pool-0"));

beforeAll(async () => {
  await sharedRunner();
});
afterEach(() => clearFaults());

describe("runner connections", { timeout: 30_000 }, () => {
  it("refuses a runner without a valid runner key before the upgrade, and a client API key is not a runner key", async () => {
    const dial = (authorization?: string) =>
      SELF.fetch("http://kiln/v1/runners/connect", { headers: { upgrade: "websocket", ...(authorization ? { authorization } : {}) } });
    expect((await dial()).status).toBe(401);
    expect((await dial("Bearer not-a-runner-key-0123456789abcdef-xyz")).status).toBe(401);
    expect((await dial("Bearer kiln1.forged.token")).status).toBe(401);
    const plain = await SELF.fetch("http://kiln/v1/runners/connect");
    expect(plain.status).toBe(400);
  });

  it("runs an action on a runner that connected out, and records which runner and key produced the cached result", async () => {
    const a = await newAction("ok");
    const stream = await executeAll(a);
    expect(stream.map(stageOf)).toEqual([QUEUED, EXECUTING, COMPLETED]);
    const res = responseOf(stream.at(-1)!);
    expect(res.result?.exitCode).toBe(0);
    expect(res.result?.executionMetadata?.worker).toBe(`shared-${SUITE} (runner key "test")`);
    // The entry in R2 says who wrote it, for operators.
    const { actionResultKey, WRITER } = await import("../../src/storage/action-store.ts");
    const entry = await env.CAS.head(actionResultKey("default", a.instanceName, a.hash));
    expect(entry?.customMetadata?.[WRITER]).toBe(`execution ${stream.at(-1)!.name} on shared-${SUITE} (runner key "test")`);
    expect(runs({ action: a.hash }).attempts.map((x) => x.attempt)).toEqual([1]);
  });

  it("counts capacity per runner across queues: two instances and platforms never exceed its slots", async () => {
    const r = await connectRunner({ slots: 2, properties: [["suite", `${SUITE}-cap`], ["os", "a"], ["os", "b"]] });
    const instances = [instanceFor("sleep-800"), instanceFor("sleep-800")];
    const actions = await Promise.all(
      Array.from({ length: 6 }, (_, i) => newAction("", { instanceName: instances[i % 2]!, platform: [["os", i % 2 ? "a" : "b"]], suite: `${SUITE}-cap` })),
    );
    const streams = await Promise.all(actions.map((a) => executeAll(a)));
    for (const s of streams) expect(responseOf(s.at(-1)!).result?.exitCode).toBe(0);
    const all = runs({}).attempts.filter((x) => x.runner === r.id && x.outcome === "ok");
    expect(all).toHaveLength(6);
    const events = all.flatMap((x) => [[x.startedAt, 1] as const, [x.endedAt!, -1] as const]).sort((p, q) => p[0] - q[0] || p[1] - q[1]);
    let now = 0;
    let max = 0;
    for (const [, d] of events) max = Math.max(max, (now += d));
    expect(max).toBe(2);
    r.close();
  });

  it("clamps ExecutionPolicy.priority to the advertised range", async () => {
    const instanceName = instanceFor("sleep-1500");
    const fill = await Promise.all([newAction("", { instanceName }), newAction("", { instanceName })]);
    const fillers = await Promise.all(fill.map((a) => firstOf(exec.execute(request(a)))));
    await runningOn(instanceName, 2);
    const huge = await newAction("", { instanceName });
    const h = await firstOf(exec.execute(request(huge, { executionPolicy: { priority: 2_000_000 } })));
    const snap = await pool().snapshot();
    expect(snap.queue.find((q) => q.name === h.first.name)?.priority).toBe(1000);
    for (const s of [...fillers, h]) expect((await s.rest).at(-1)!.done).toBe(true);
  });
});

describe("leases", { timeout: 40_000 }, () => {
  it("runs an action many times longer than a lease (leases renewed by heartbeats; nothing held open)", async () => {
    // Lease 2 s, heartbeat 0.2 s (vitest.config.mts): an 8 s action outlives four leases.
    const a = await newAction("sleep-8000");
    const res = responseOf((await executeAll(a)).at(-1)!);
    expect(res.status?.code ?? 0).toBe(0);
    expect(runs({ action: a.hash }).attempts.map((x) => [x.outcome, x.attempt])).toEqual([["ok", 1]]);
  });

  it("drops a late result from a superseded lease and keeps the result of the current one", async () => {
    const a = await newAction("busy-0+lost-1");
    const stream = await executeAll(a);
    expect(responseOf(stream.at(-1)!).status?.code ?? 0).toBe(0);
    const [lost, ok] = runs({ action: a.hash }).attempts;
    expect([lost!.outcome, ok!.outcome]).toEqual(["lost", "ok"]);
    // The first runner "wakes up" and reports: the pool answers accepted: false, nothing changes.
    const late = await grpcWebClient(RunnerService, { authorization: `Bearer ${lost!.token}` }).complete({
      leaseId: lost!.leaseId,
      outcome: { case: "error", value: { code: Code.Internal, message: "late" } },
    });
    expect(late.accepted).toBe(false);
    const op = await ops.getOperation({ name: stream.at(-1)!.name });
    expect(responseOf(op).status?.code ?? 0).toBe(0);
  });

  it("re-queues the work of a runner whose connection dropped, and another runner completes it", async () => {
    const suite = `${SUITE}-drop`;
    const first = await connectRunner({ slots: 1, properties: [["suite", suite]] });
    const a = await newAction("sleep-500", { suite });
    const { rest } = await firstOf(exec.execute(request(a)));
    await waitFor("the first runner to start it", async () => first.running().length === 1);
    first.close();
    const second = await connectRunner({ slots: 1, properties: [["suite", suite]] });
    const stream = await rest;
    expect(stream.map(stageOf)).toContain(QUEUED);
    const attempts = runs({ action: a.hash }).attempts;
    expect(attempts.map((x) => [x.runner, x.attempt, x.outcome])).toEqual([
      [first.id, 1, "lost"],
      [second.id, 2, "ok"],
    ]);
    expect(responseOf(stream.at(-1)!).status?.code ?? 0).toBe(0);
    second.close();
  });

  it("gives a lease token access to its operation's instance in the CAS only, and to nothing else", async () => {
    const a = await newAction("sleep-1500");
    const { rest } = await firstOf(exec.execute(request(a)));
    const [attempt] = await runningOn(a.instanceName, 1);
    const auth = { authorization: `Bearer ${attempt!.token}` };
    const cas = grpcWebClient(ContentAddressableStorage, auth);
    expect((await cas.findMissingBlobs({ instanceName: a.instanceName, blobDigests: [a.digest] })).missingBlobDigests).toEqual([]);
    expect((await errorOf(cas.findMissingBlobs({ instanceName: `${a.instanceName}/other`, blobDigests: [] }))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(drain(grpcWebClient(Execution, auth).execute(request(a))))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(grpcWebClient(Operations, auth).listOperations({ name: "operations" }))).code).toBe(Code.PermissionDenied);
    await rest;
  });
});

describe("live output", { timeout: 30_000 }, () => {
  it("streams stdout while the action runs through ByteStream Read of stdout_stream_name, ending when it ends", async () => {
    const a = await newAction("log-1500");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    const meta = await waitFor("EXECUTING with a stream name", async () => {
      const op = await ops.getOperation({ name: first.name });
      const { anyUnpack } = await import("@bufbuild/protobuf/wkt");
      const { ExecuteOperationMetadataSchema } = await import("../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts");
      const m = anyUnpack(op.metadata!, ExecuteOperationMetadataSchema)!;
      return m.stdoutStreamName ? m : undefined;
    });
    expect(meta.stdoutStreamName).toBe(`${a.instanceName}/${first.name}/attempts/1/stdout`);
    const chunks: string[] = [];
    let sawBeforeEnd = false;
    for await (const r of grpcWebClient(ByteStream).read({ resourceName: meta.stdoutStreamName })) {
      chunks.push(new TextDecoder().decode(r.data));
      if (!(await ops.getOperation({ name: first.name })).done) sawBeforeEnd = true;
    }
    const text = chunks.join("");
    expect(sawBeforeEnd).toBe(true);
    expect(text.startsWith("line 0\nline 1\n")).toBe(true);
    expect((await rest).at(-1)!.done).toBe(true);
    // Once the operation is over, the stream reads whole and ends at once (until retention ends).
    let again = "";
    for await (const r of grpcWebClient(ByteStream).read({ resourceName: meta.stdoutStreamName })) again += new TextDecoder().decode(r.data);
    expect(again.startsWith(text)).toBe(true);
    // A stream of an attempt that never ran is NOT_FOUND.
    const readOther = async () => {
      for await (const _ of grpcWebClient(ByteStream).read({ resourceName: meta.stdoutStreamName.replace("/attempts/1/", "/attempts/2/") }));
    };
    expect((await errorOf(readOther())).code).toBe(Code.NotFound);
  });
});

describe("live output read from an offset", { timeout: 30_000 }, () => {
  it("a Read at any read_offset returns the bytes from there, whatever offsets the appends' chunks start at", async () => {
    const a = await newAction("sleep-3000");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    const [attempt] = await runningOn(a.instanceName, 1);
    const runner = grpcWebClient(RunnerService, { authorization: `Bearer ${attempt!.token}` });
    // A short append, then a long one: its 64 KiB chunks start at 100, 65,636, ... (not at multiples of 64 KiB).
    const log = Uint8Array.from({ length: 100_100 }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
    await runner.appendLog({ leaseId: attempt!.leaseId, stream: LogStream.STDOUT, offset: 0n, data: log.subarray(0, 100) });
    await runner.appendLog({ leaseId: attempt!.leaseId, stream: LogStream.STDOUT, offset: 100n, data: log.subarray(100) });
    const name = `${a.instanceName}/${first.name}/attempts/1/stdout`;
    for (const [offset, limit] of [[65_540, 1000], [100, 70_000], [65_636, 10], [99, 2], [0, 100_100]]) {
      const parts: Uint8Array[] = [];
      for await (const r of grpcWebClient(ByteStream).read({ resourceName: name, readOffset: BigInt(offset!), readLimit: BigInt(limit!) })) parts.push(r.data);
      const got = new Uint8Array(await new Blob(parts).arrayBuffer());
      expect(got, `offset ${offset}`).toEqual(log.subarray(offset!, offset! + limit!));
    }
    await ops.cancelOperation({ name: first.name });
    await rest;
  });
});

describe("faults at every cross-object call", { timeout: 40_000 }, () => {
  it("a result over the 2 MB a stored row or entry may hold is kept in parts, in the pool's outbox and in the operation, and delivered whole", async () => {
    const N = 40_000; // ~3.6 MB of ExecuteResponse
    const a = await newAction(`outputs-${N}`);
    armFault("pool.deliver", 10_000); // the outbox keeps its events until the faults are cleared
    const { first, rest } = await firstOf(exec.execute(request(a)));
    const name = first.name;
    const outboxParts = () =>
      runInDurableObject(pool(), (_o, state) =>
        state.storage.sql.exec<{ n: number; biggest: number | null }>(`SELECT COUNT(*) AS n, MAX(LENGTH(data)) AS biggest FROM outbox_parts WHERE outbox_id IN (SELECT id FROM outbox WHERE name = ?)`, name).one(),
      );
    const held = await waitFor("the completion in the outbox", async () => ((await outboxParts()).n > 0 ? outboxParts() : undefined));
    expect(held.n).toBeGreaterThanOrEqual(3);
    expect(held.biggest).toBeLessThanOrEqual(PART_BYTES);
    clearFaults();
    await runDurableObjectAlarm(pool());
    const res = responseOf((await rest).at(-1)!);
    expect(res.result?.outputFiles).toHaveLength(N);
    expect((await outboxParts()).n).toBe(0); // delivered, and its parts gone with it
    // The operation keeps the response apart from its state, in parts, also once its alarm has
    // written the state again (the listing), and reads it back whole.
    await runDurableObjectAlarm(opStub(name));
    await runInDurableObject(opStub(name), async (o, state) => {
      const stored = await state.storage.get<Record<string, unknown>>("state");
      expect(stored?.response).toBeUndefined();
      const parts = [...(await state.storage.list<Uint8Array>({ prefix: "response:" })).values()];
      expect(parts.length).toBe(stored?.responseParts);
      expect(Math.max(...parts.map((p) => p.byteLength))).toBeLessThanOrEqual(PART_BYTES);
      (o as unknown as { state?: unknown }).state = undefined; // as after the object was evicted
    });
    const again = await ops.getOperation({ name });
    expect(responseOf(again).result?.outputFiles).toHaveLength(N);
  });

  it("an enqueue that fails is retried: one run, the operation completes", async () => {
    armFault("pool.enqueue", 2);
    const a = await newAction("ok");
    expect(responseOf((await executeAll(a)).at(-1)!).result?.exitCode).toBe(0);
    expect(runs({ action: a.hash }).attempts).toHaveLength(1);
  });

  it("an enqueue that keeps failing is UNAVAILABLE and leaves nothing behind: the next Execute of the digest runs", async () => {
    armFault("pool.enqueue", 3);
    const a = await newAction("ok");
    expect((await errorOf(executeAll(a))).code).toBe(Code.Unavailable);
    expect(runs({ action: a.hash }).attempts).toHaveLength(0);
    expect(responseOf((await executeAll(a)).at(-1)!).result?.exitCode).toBe(0);
    expect(runs({ action: a.hash }).attempts).toHaveLength(1);
  });

  it("events the pool cannot deliver (start, completion) are retried from its outbox; nothing is stuck or doubled", async () => {
    armFault("pool.deliver", 3);
    const a = await newAction("ok");
    const stream = await executeAll(a);
    expect(responseOf(stream.at(-1)!).result?.exitCode).toBe(0);
    expect(runs({ action: a.hash }).attempts).toHaveLength(1);
    expect((await pool().snapshot()).outbox).toBe(0);
    // The digest is not poisoned: the next identical Execute is a cache hit, a fresh one runs.
    expect(responseOf((await executeAll(a)).at(-1)!).cachedResult).toBe(true);
  });

  it("an operation that refuses events (its object failing) gets them once it recovers", async () => {
    armFault("operation.event", 4);
    const a = await newAction("ok");
    expect(responseOf((await executeAll(a)).at(-1)!).result?.exitCode).toBe(0);
    expect(runs({ action: a.hash }).attempts).toHaveLength(1);
  });

  it("a Complete that fails is retried by the runner's next try: the lease is still current, one result", async () => {
    const a = await newAction("sleep-300");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    const [attempt] = await runningOn(a.instanceName, 1);
    armFault("pool.complete", 1);
    const stream = await rest;
    // The fake runner does not retry: its first Complete failed, so the lease expired and a
    // second attempt ran and completed. Nothing stuck, one completion.
    expect(stream.at(-1)!.done).toBe(true);
    expect(responseOf(stream.at(-1)!).status?.code ?? 0).toBe(0);
    expect(runs({ operation: first.name }).attempts.map((x) => x.outcome)).toEqual(["dropped", "ok"]);
    void attempt;
  });

  it("work no connected runner can take (platform or tenant) completes FAILED_PRECONDITION after NO_RUNNER_TIMEOUT_SECONDS, not never", async () => {
    const { create: mk, fromBinary, toBinary } = await import("@bufbuild/protobuf");
    const { ActionSchema, CommandSchema } = await import("../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts");
    const { OperationSchema } = await import("../../src/gen/google/longrunning/operations_pb.ts");
    const shard = 7; // a shard of its own: work is queued there while no runner is connected
    const pool7 = env.RUNNER_POOL.get(env.RUNNER_POOL.idFromName(`pool-${shard}`));
    const queue = async (platform: [string, string][], tenant: string) => {
      const source = await newAction("ok");
      const name = `operations/${crypto.randomUUID()}`;
      const actionDigest = { hash: source.hash, size: Number(source.digest.sizeBytes) };
      const entry = {
        shard, name, tenant, instanceName: source.instanceName, actionDigest, priority: 0, dedupKey: null, platform, timeoutMs: 60_000, queuedAt: Date.now(),
        action: toBinary(ActionSchema, mk(ActionSchema, {})),
        command: toBinary(CommandSchema, mk(CommandSchema, { arguments: ["true"] })),
      };
      await opStub(name).init({ name, tenant, instanceName: source.instanceName, actionDigest, doNotCache: false, timeoutMs: 60_000, priority: 0, shard }, entry);
      expect((await pool7.enqueue(entry)).kind).toBe("queued");
      return name;
    };
    const gpu = await queue([["suite", SUITE], ["gpu", "a100"]], "default");
    const elsewhere = await queue([["suite", SUITE]], "elsewhere");
    // A runner of tenant "default" only, without a gpu.
    const key = `runner-of-default-${crypto.randomUUID()}`;
    const saved = { shards: env.RUNNER_POOL_SHARDS, keys: env.RUNNER_KEYS, timeout: env.NO_RUNNER_TIMEOUT_SECONDS };
    env.RUNNER_POOL_SHARDS = "8";
    env.RUNNER_KEYS = JSON.stringify([...JSON.parse(saved.keys!), { name: "default-only", key, tenant: "default" }]);
    const runner = await connectRunner({ shard, key, properties: [["suite", SUITE]] });
    try {
      env.NO_RUNNER_TIMEOUT_SECONDS = "0.2";
      await runDurableObjectAlarm(pool7); // both noted as unmatched
      await new Promise((r) => setTimeout(r, 300));
      await runDurableObjectAlarm(pool7);
    } finally {
      Object.assign(env, { RUNNER_POOL_SHARDS: saved.shards, RUNNER_KEYS: saved.keys, NO_RUNNER_TIMEOUT_SECONDS: saved.timeout });
      runner.close();
    }
    for (const [name, says] of [[gpu, /gpu=a100; runners offer: suite=/], [elsewhere, /no runner serving tenant "elsewhere"/]] as const) {
      const op = fromBinary(OperationSchema, (await opStub(name).operation())!);
      expect(op.done).toBe(true);
      const status = responseOf(op).status;
      expect(status?.code).toBe(Code.FailedPrecondition);
      expect(status?.message).toMatch(says);
      expect(runs({ operation: name }).attempts).toHaveLength(0);
    }
  });

  it("a reconcile that crosses the completion on its way (it arrives once the completion was delivered) does not run the action again", async () => {
    const { create: mk, toBinary } = await import("@bufbuild/protobuf");
    const { ActionSchema, CommandSchema } = await import("../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts");
    const a = await newAction("ok");
    const done = await executeAll(a);
    const name = done.at(-1)!.name;
    expect(responseOf(done.at(-1)!).result?.exitCode).toBe(0);
    // What the operation sent before it learned of its completion: its entry, as it was queued.
    const entry = {
      shard: 0, name, tenant: "default", instanceName: a.instanceName, actionDigest: { hash: a.hash, size: Number(a.digest.sizeBytes) },
      priority: 0, dedupKey: null, platform: [["suite", SUITE]] as [string, string][], timeoutMs: 60_000, queuedAt: Date.now(),
      action: toBinary(ActionSchema, mk(ActionSchema, {})), command: toBinary(CommandSchema, mk(CommandSchema, { arguments: ["true"] })),
    };
    expect(await pool().ensure(entry)).toBe("completing");
    await new Promise((r) => setTimeout(r, 300));
    await runDurableObjectAlarm(pool());
    expect(runs({ operation: name }).attempts).toHaveLength(1);
  });

  it("a pool that lost an operation (enqueue never arrived) re-queues it when the operation reconciles", async () => {
    const a = await newAction("ok");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    await rest;
    // Simulate the lost enqueue on a fresh operation: create it directly, never queued.
    const name = `operations/${crypto.randomUUID()}`;
    const entrySource = await newAction("ok");
    const { create: mk, toBinary } = await import("@bufbuild/protobuf");
    const { ActionSchema, CommandSchema } = await import("../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts");
    const entry = {
      shard: 0,
      name,
      tenant: "default",
      instanceName: entrySource.instanceName,
      actionDigest: { hash: entrySource.hash, size: Number(entrySource.digest.sizeBytes) },
      priority: 0,
      dedupKey: null,
      platform: [["suite", SUITE]] as [string, string][],
      timeoutMs: 60_000,
      queuedAt: Date.now(),
      action: toBinary(ActionSchema, mk(ActionSchema, {})),
      command: toBinary(CommandSchema, mk(CommandSchema, { arguments: ["true"] })),
    };
    const stub = opStub(name);
    await stub.init({ name, tenant: "default", instanceName: entrySource.instanceName, actionDigest: entry.actionDigest, doNotCache: false, timeoutMs: 60_000, priority: 0, shard: 0 }, entry);
    const saved = env.OPERATION_RECONCILE_SECONDS;
    env.OPERATION_RECONCILE_SECONDS = "0.01";
    try {
      await new Promise((r) => setTimeout(r, 50));
      await runDurableObjectAlarm(stub);
    } finally {
      env.OPERATION_RECONCILE_SECONDS = saved;
    }
    const done = await drain(exec.waitExecution({ name }));
    expect(responseOf(done.at(-1)!).result?.exitCode).toBe(0);
    expect(runs({ operation: name }).attempts).toHaveLength(1);
    void first;
  });
});
