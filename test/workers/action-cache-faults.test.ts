// The action cache when R2 fails: a read or write R2 fails is UNAVAILABLE with the reason (a fault
// to retry, not a miss and not an internal error), and the refresh a hit makes of an ageing entry
// is only upkeep: when R2 fails it, the hit still answers.
import { env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { Principal } from "../../src/auth.ts";
import type { Env } from "../../src/env.ts";
import { ActionCache, ActionResultSchema, ContentAddressableStorage, TreeSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { SMALL_BLOB_MAX_BYTES } from "../../src/shared/small-blob-size.ts";
import { lookupActionResult } from "../../src/services/action-cache.ts";
import type { Scope } from "../../src/services/scope.ts";
import { actionResultKey, putActionResult } from "../../src/storage/action-store.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { tenantPerTest, type Tenant } from "./cas-eviction-helpers.ts";
import { failingBucket, type When } from "./fault-injection.ts";
import { connectClient, digestOf, errorOf } from "./helpers.ts";

const DAY = 24 * 3600 * 1000;
const setup = tenantPerTest();

/** The scope a call of the tenant's key would get, over `faulty` bindings. */
const scopeOver = (t: Tenant, faulty: Env): Scope => ({
  env: faulty,
  principal: { authenticated: true, tenant: t.tenant, instances: [""], canWrite: true, label: "test" } as Principal,
  instanceName: "",
  store: new BlobStore(faulty, t.tenant),
});

/** An entry (of `result`) last used `daysAgo` days ago, written directly; its action's digest. */
async function entry(t: Tenant, tag: string, daysAgo: number, result: MessageInitShape<typeof ActionResultSchema> = {}) {
  const action = await digestOf(`${t.tenant}/${tag}`);
  const bytes = toBinary(ActionResultSchema, create(ActionResultSchema, { exitCode: 7, ...result }));
  await env.CAS.put(actionResultKey(t.tenant, "", action.hash), bytes, { customMetadata: { used: String(Date.now() - daysAgo * DAY) } });
  return { hash: action.hash, size: Number(action.sizeBytes), key: actionResultKey(t.tenant, "", action.hash) };
}


describe("action cache with R2 failing", () => {
  it("a hit whose refresh of an ageing entry R2 fails still answers; the next hit refreshes it", async () => {
    const t = setup({ AC_MAX_IDLE_DAYS: "7" });
    const a = await entry(t, "ageing", 3);
    const faulty = failingBucket((op, k) => op === "put" && k === a.key);
    expect(await lookupActionResult(scopeOver(t, faulty), a)).toMatchObject({ exitCode: 7 });
    const usedAfter = async () => Number((await env.CAS.head(a.key))!.customMetadata!.used);
    expect(await usedAfter()).toBeLessThan(Date.now() - 2 * DAY);
    expect(await lookupActionResult(scopeOver(t, env), a)).toMatchObject({ exitCode: 7 });
    expect(await usedAfter()).toBeGreaterThan(Date.now() - DAY);
  });

  for (const when of ["before", "after"] as When[]) {
    it(`a lookup whose R2 read fails ${when === "before" ? "to start" : "mid-way"}: UNAVAILABLE with the reason, not a miss`, async () => {
      const t = setup();
      const a = await entry(t, `read-${when}`, 0);
      const err = await errorOf(lookupActionResult(scopeOver(t, failingBucket((op, k) => op === "get" && k === a.key, when)), a));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the action cache entry could not be read \(.*injected: R2 get.*\); retry/);
    });

    it(`a hit whose output Tree R2 fails to read ${when === "before" ? "at the start" : "mid-way"}: UNAVAILABLE, not a miss`, async () => {
      const t = setup();
      const file = new TextEncoder().encode(`output of ${t.tenant}`);
      const fileDigest = await digestOf(file);
      // Over the small-blob size, so that the Tree is read from R2.
      const tree = toBinary(TreeSchema, create(TreeSchema, { root: { files: [{ name: "f".padEnd(SMALL_BLOB_MAX_BYTES, "x"), digest: fileDigest }] } }));
      const treeDigest = await digestOf(tree);
      await connectClient(ContentAddressableStorage, t.headers).batchUpdateBlobs({ requests: [{ digest: fileDigest, data: file }, { digest: treeDigest, data: tree }] });
      const a = await entry(t, `tree-${when}`, 0, { outputDirectories: [{ path: "out", treeDigest }] });
      expect(await lookupActionResult(scopeOver(t, env), a)).not.toBeNull();
      const faulty = failingBucket((op, k) => op === "get" && k === `cas/${t.tenant}/${treeDigest.hash}`, when);
      const err = await errorOf(lookupActionResult(scopeOver(t, faulty), a));
      expect(err.code).toBe(Code.Unavailable);
    });

    it(`a store R2 fails ${when} the entry lands: UNAVAILABLE with the reason; stored again, it answers`, async () => {
      const t = setup();
      const action = await digestOf(`${t.tenant}/store-${when}`);
      const key = actionResultKey(t.tenant, "", action.hash);
      const result = create(ActionResultSchema, { exitCode: 3 });
      const err = await errorOf(putActionResult(failingBucket((op, k) => op === "put" && k === key, when).CAS, key, result));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the action cache entry could not be stored \(injected: R2 put.*\); retry/);
      const ac = connectClient(ActionCache, t.headers);
      await ac.updateActionResult({ actionDigest: action, actionResult: result });
      expect((await ac.getActionResult({ actionDigest: action })).exitCode).toBe(3);
    });
  }
});
