// Durable Object restarts in the middle of a run: the pool shard (its runners' connections drop
// and are dialled again, naming the leases they still run) and the operation (its waiters attach
// again). The action completes once, on its first lease.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { connectRunner, runs } from "./fake-runner.ts";
import { SUITE, exec, firstOf, newAction, opStub, request, responseOf, runningOn, waitFor } from "./execution-helpers.ts";

const restart = (stub: DurableObjectStub) =>
  runInDurableObject(stub, (_instance: unknown, state: DurableObjectState) => {
    // abort() resets the object: in-memory state and its WebSockets are gone, storage stays.
    try {
      state.abort("test restart");
    } catch {
      // abort throws into its caller by design
    }
  }).catch(() => {});

describe("restarts", { timeout: 40_000 }, () => {
  it("a pool shard restarted mid-action keeps the lease of a runner that dials again: one run, completed", async () => {
    const runner = await connectRunner({ slots: 2, properties: [["suite", SUITE]] });
    const a = await newAction("sleep-2500");
    const { rest } = await firstOf(exec.execute(request(a)));
    await runningOn(a.instanceName, 1);
    await restart(env.RUNNER_POOL.get(env.RUNNER_POOL.idFromName("pool-0")));
    await waitFor("the runner to dial again", async () => runner.reconnects() > 0);
    const stream = await rest;
    expect(responseOf(stream.at(-1)!).status?.code ?? 0).toBe(0);
    expect(runs({ action: a.hash }).attempts.map((x) => [x.outcome, x.attempt])).toEqual([["ok", 1]]);
    runner.close();
  });

  it("an operation restarted mid-action loses no waiter and no result", async () => {
    const runner = await connectRunner({ slots: 2, properties: [["suite", SUITE]] });
    const a = await newAction("sleep-1500");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    await runningOn(a.instanceName, 1);
    await restart(opStub(first.name));
    const stream = await rest;
    expect(stream.at(-1)!.done).toBe(true);
    expect(responseOf(stream.at(-1)!).status?.code ?? 0).toBe(0);
    expect(runs({ action: a.hash }).attempts.map((x) => x.outcome)).toEqual(["ok"]);
    runner.close();
  });
});
