// Action-cache entries age out after AC_MAX_IDLE_DAYS without a hit (a hit refreshes an aged entry),
// an entry whose blobs were evicted is never served, and /metrics shows the storage series.
import { SELF, env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { ActionCache, ActionResultSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import type { CasIndexDO } from "../../durable-objects/cas-index.ts";
import { actionResultKey, refreshIfAgeing } from "../../src/storage/action-store.ts";
import { codeOf, connectClient, digestOf } from "./helpers.ts";
import { blobsInShard, evictStep, store, tenantPerTest, type Tenant } from "./cas-eviction-helpers.ts";

const DAY = 24 * 3600 * 1000;
const setup = tenantPerTest();

/** An entry as a hit-less one `daysAgo` old looks: written directly with that last use. */
async function agedEntry(t: Tenant, tag: string, daysAgo: number) {
  const action = await digestOf(`${t.tenant}/${tag}`);
  const bytes = toBinary(ActionResultSchema, create(ActionResultSchema, { exitCode: 7 }));
  await env.CAS.put(actionResultKey(t.tenant, "", action.hash), bytes, { customMetadata: { used: String(Date.now() - daysAgo * DAY) } });
  return action;
}

const sweeper = (t: Tenant) => t.index.allShards()[0]!.stub;

describe("action-cache ageing", () => {
  it("deletes entries unused for AC_MAX_IDLE_DAYS; a hit keeps an entry alive", async () => {
    const t = setup({ AC_MAX_IDLE_DAYS: "7" });
    // The sweeper shard learns its tenant from its first write.
    await store(t, await blobsInShard(t.tenant, "0", 1, 10));
    const ac = connectClient(ActionCache, t.headers);
    const hit = await agedEntry(t, "hit", 3);
    const idle = await agedEntry(t, "idle", 3);
    const fresh = await digestOf(`${t.tenant}/fresh`);
    await ac.updateActionResult({ actionDigest: fresh, actionResult: { exitCode: 0 } });
    expect((await ac.getActionResult({ actionDigest: hit })).exitCode).toBe(7);

    // Five days later (fake clock): "idle" is 8 days unused, "hit" 5 (refreshed by the hit), "fresh" 5.
    const r = await runInDurableObject(sweeper(t), (o: CasIndexDO) => o.sweepActionCache(Date.now() + 5 * DAY));
    expect(r).toEqual({ deleted: 1, more: false });
    expect(await codeOf(ac.getActionResult({ actionDigest: idle }))).toBe(Code.NotFound);
    expect((await ac.getActionResult({ actionDigest: hit })).exitCode).toBe(7);
    expect(await codeOf(ac.getActionResult({ actionDigest: fresh }))).toBe("ok");
    // Ten days later, all go.
    expect(await runInDurableObject(sweeper(t), (o: CasIndexDO) => o.sweepActionCache(Date.now() + 10 * DAY))).toEqual({ deleted: 2, more: false });
    expect(await codeOf(ac.getActionResult({ actionDigest: fresh }))).toBe(Code.NotFound);
  });

  it("a hit's refresh never overwrites an UpdateActionResult that landed after the hit read the entry", async () => {
    const t = setup({ AC_MAX_IDLE_DAYS: "7" });
    const ac = connectClient(ActionCache, t.headers);
    const action = await agedEntry(t, "raced", 3);
    const key = actionResultKey(t.tenant, "", action.hash);
    const read = (await env.CAS.get(key))!;
    const readBytes = new Uint8Array(await read.arrayBuffer());
    await ac.updateActionResult({ actionDigest: action, actionResult: { exitCode: 0 } });
    await refreshIfAgeing(env, read, readBytes);
    expect((await ac.getActionResult({ actionDigest: action })).exitCode).toBe(0);
    // Without a race the refresh does its job: the entry's last use moves to now.
    const now = (await env.CAS.get(key))!;
    await refreshIfAgeing(env, now, new Uint8Array(await now.arrayBuffer()), Date.now() + 3 * DAY);
    expect(Number((await env.CAS.head(key))!.customMetadata!.used)).toBeGreaterThan(Date.now() + 2 * DAY);
  });

  it("without AC_MAX_IDLE_DAYS nothing ages out", async () => {
    const t = setup({});
    await store(t, await blobsInShard(t.tenant, "0", 1, 10));
    const old = await agedEntry(t, "old", 400);
    expect(await runInDurableObject(sweeper(t), (o: CasIndexDO) => o.sweepActionCache(Date.now()))).toEqual({ deleted: 0, more: false });
    expect((await connectClient(ActionCache, t.headers).getActionResult({ actionDigest: old })).exitCode).toBe(7);
  });

  it("an entry whose output blob was evicted is a miss, not a hit pointing at nothing", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const [out] = await blobsInShard(t.tenant, "3", 1, 20);
    await store(t, [out!]);
    const ac = connectClient(ActionCache, t.headers);
    const action = await digestOf(`${t.tenant}/uses-out`);
    await ac.updateActionResult({ actionDigest: action, actionResult: { outputFiles: [{ path: "o", digest: out!.digest }] } });
    expect(await codeOf(ac.getActionResult({ actionDigest: action }))).toBe("ok");
    await evictStep(t, out!.digest.hash, { now: Date.now() + 1000 });
    expect(await codeOf(ac.getActionResult({ actionDigest: action }))).toBe(Code.NotFound);
  });
});

describe("/metrics storage series", () => {
  it("shows CAS bytes and blobs per tenant summed across shards, and evictions by reason", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const a = await blobsInShard(t.tenant, "4", 2, 30);
    const b = await blobsInShard(t.tenant, "5", 3, 40);
    await store(t, [...a, ...b]);
    await evictStep(t, a[0]!.digest.hash, { now: Date.now() + 1000, limit: 1 });
    const res = await SELF.fetch("http://kiln/metrics", { headers: t.headers });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain(`kiln_cas_bytes{tenant="${t.tenant}"} ${30 + 3 * 40}`);
    expect(text).toContain(`kiln_cas_blobs{tenant="${t.tenant}"} 4`);
    expect(text).toContain(`kiln_cas_evictions_total{tenant="${t.tenant}",reason="budget"} 1`);
    expect(text).toContain(`kiln_cas_evictions_total{tenant="${t.tenant}",reason="idle"} 0`);
    expect(text).toContain(`kiln_cas_evicted_bytes_total{tenant="${t.tenant}"} 30`);
    expect(text).toMatch(/# TYPE kiln_cas_bytes gauge/);
  });
});
