// The runner pool: runners dial in, take work over their connection, renew leases with
// heartbeats; lost leases re-queue, late results are dropped, capacity is per runner.
import { env } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import { connectRunner, runs } from "./fake-runner.ts";
import { COMPLETED, executeAll, newAction, responseOf, sharedRunner } from "./execution-helpers.ts";

beforeAll(async () => {
  await sharedRunner();
});

describe("runner pool", { timeout: 30_000 }, () => {
  it("runs an action on a runner that connected out", async () => {
    const a = await newAction("ok");
    const ops = await executeAll(a);
    const last = ops[ops.length - 1]!;
    expect(responseOf(last).result?.exitCode).toBe(0);
    expect(responseOf(last).result?.executionMetadata?.worker).toMatch(/runner key "test"/);
    expect(runs({ action: a.hash }).attempts).toHaveLength(1);
    void COMPLETED;
    void env;
    void connectRunner;
  });
});
