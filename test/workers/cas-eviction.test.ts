// CAS eviction: least recently used first, each shard within its share of CAS_MAX_BYTES, idle
// blobs past CAS_MAX_IDLE_DAYS, nothing within the minimum lifetime, and the index row always
// gone before the object (fault injection between the two steps). The clock is the `now` the
// eviction step is given and the last-access times the test writes; nothing sleeps.
import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import type { CasIndexDO } from "../../durable-objects/cas-index.ts";
import { runInDurableObject } from "cloudflare:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { ActionCache, ActionSchema, CommandSchema, DirectorySchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { checkAction } from "../../src/execution/check-action.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { connectClient, digestOf, grpcWebClient, pseudoRandom } from "./helpers.ts";
import { failingBucket, heldBucket, withObjectBucket } from "./fault-injection.ts";
import { R2_BLOB_BYTES, admin, blobsInShard, bytesHeld, evictStep, lastUsedAt, missing, objectExists, store, tenantPerTest, type Tenant, type TestBlob } from "./cas-eviction-helpers.ts";

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
const setup = tenantPerTest();

describe("eviction by budget", () => {
  for (const [where, size] of [["in R2", R2_BLOB_BYTES], ["small, in the index", 100]] as const) {
    it(`evicts least recently used blobs first until the shard is within its share (blobs ${where})`, async () => {
      // 16 shards share the budget: 16 * 2.5 blobs' bytes leaves this shard two and a half.
      const t = setup({ CAS_MAX_BYTES: String(16 * 2.5 * size) });
      const blobs = await blobsInShard(t.tenant, "a", 5, size);
      await store(t, blobs);
      expect(await Promise.all(blobs.map((b) => objectExists(t, b)))).toEqual(blobs.map(() => where === "in R2"));
      const now = Date.now();
      // Used 10, 14, 11, 13, 12 hours ago: the order of eviction is 1, 3, 4, (then 0, 2 stay).
      const ago = [10, 14, 11, 13, 12];
      for (const [i, b] of blobs.entries()) await lastUsedAt(t, b, now - ago[i]! * HOUR);
      const r = await evictStep(t, blobs[0]!.digest.hash, { now });
      expect(r).toEqual({ evicted: 3, bytes: 3 * size, more: false });
      expect(await missing(t, blobs)).toEqual(new Set([1, 3, 4].map((i) => blobs[i]!.digest.hash)));
      expect(await Promise.all(blobs.map((b) => bytesHeld(t, b)))).toEqual([true, false, true, false, false]);
      // Within budget now: another step evicts nothing.
      expect((await evictStep(t, blobs[0]!.digest.hash, { now })).evicted).toBe(0);
      const stats = await admin(t, "GET", "/admin/cas/stats");
      expect(stats.status).toBe(200);
      expect(stats.body.tenants).toEqual([expect.objectContaining({ tenant: t.tenant, bytes: 2 * size, blobs: 2 })]);
      expect(stats.body.tenants[0].counters).toMatchObject({ evicted_budget: 3, evicted_bytes: 3 * size, evicted_idle: 0 });
    });
  }

  it("never evicts a blob used within the minimum lifetime (plus the touch interval), and does once it has passed", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "3" });
    const blobs = await blobsInShard(t.tenant, "b", 3, 64);
    await store(t, blobs);
    const now = Date.now();
    for (const b of blobs) await lastUsedAt(t, b, now - 2 * HOUR);
    expect((await evictStep(t, blobs[0]!.digest.hash, { now })).evicted).toBe(0);
    // (Asked without touching: FindMissing would renew their last use.)
    expect(await t.index.missing(blobs.map((b) => ({ hash: b.digest.hash, size: 64 })), false)).toEqual([]);
    // 3 h + the 1 h touch interval after their recorded use (fake clock), the budget wins.
    expect((await evictStep(t, blobs[0]!.digest.hash, { now: now + 2 * HOUR - 1 })).evicted).toBe(0);
    const r = await evictStep(t, blobs[0]!.digest.hash, { now: now + 2 * HOUR + 1 });
    expect(r.evicted).toBe(3);
    expect((await missing(t, blobs)).size).toBe(3);
  });

  it("a blob reported present lives the whole minimum lifetime from that answer, though the answer did not rewrite its last use", async () => {
    // Bazel (--experimental_remote_cache_ttl, 3 h) relies on a blob FindMissing reported present
    // for that long. Touches are written at most once per CAS_TOUCH_INTERVAL_SECONDS (1 h).
    const t = setup({ CAS_MAX_BYTES: "1" });
    const blobs = await blobsInShard(t.tenant, "e", 2, 64);
    await store(t, blobs);
    const now = Date.now();
    for (const b of blobs) await lastUsedAt(t, b, now - 59 * 60_000); // recorded 59 min ago: not rewritten now
    expect(await missing(t, blobs)).toEqual(new Set()); // "present", now
    expect((await evictStep(t, blobs[0]!.digest.hash, { now: now + 3 * HOUR - 1000 })).evicted).toBe(0);
    expect(await t.index.missing(blobs.map((b) => ({ hash: b.digest.hash, size: 64 })), false)).toEqual([]);
  });

  it("the default minimum lifetime is 3 hours, counted from a use the index may have recorded up to an hour early", async () => {
    const t = setup({ CAS_MAX_BYTES: "1" });
    const blobs = await blobsInShard(t.tenant, "c", 2, 64);
    await store(t, blobs);
    const now = Date.now();
    await lastUsedAt(t, blobs[0]!, now - 4 * HOUR + 60_000);
    await lastUsedAt(t, blobs[1]!, now - 4 * HOUR - 60_000);
    expect((await evictStep(t, blobs[0]!.digest.hash, { now })).evicted).toBe(1);
    expect(await missing(t, blobs)).toEqual(new Set([blobs[1]!.digest.hash]));
  });

  it("works in bounded steps and says when more is left", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const blobs = await blobsInShard(t.tenant, "d", 5, 32);
    await store(t, blobs);
    const h = blobs[0]!.digest.hash;
    const later = Date.now() + 1000;
    expect(await evictStep(t, h, { now: later, limit: 2 })).toMatchObject({ evicted: 2, more: true });
    expect(await evictStep(t, h, { now: later, limit: 2 })).toMatchObject({ evicted: 2, more: true });
    expect(await evictStep(t, h, { now: later, limit: 2 })).toMatchObject({ evicted: 1, more: false });
    expect((await missing(t, blobs)).size).toBe(5);
  });
});

describe("eviction from the alarm", () => {
  it("writes over budget arm the shard's alarm within a minute, and the alarm brings it within its share", async () => {
    const { runDurableObjectAlarm } = await import("cloudflare:test");
    const t = setup({ CAS_MAX_BYTES: String(16 * 100), CAS_MIN_LIFETIME_HOURS: "0" });
    const blobs = await blobsInShard(t.tenant, "9", 4, 60);
    const before = Date.now();
    await store(t, blobs);
    const stub = t.index.shard(blobs[0]!.digest.hash);
    const alarm = await runInDurableObject(stub, (_o, s) => s.storage.getAlarm());
    expect(alarm).not.toBeNull();
    expect(alarm!).toBeLessThanOrEqual(Date.now() + 60_000);
    expect(alarm!).toBeGreaterThanOrEqual(before);
    for (const [i, b] of blobs.entries()) await lastUsedAt(t, b, before - (10 - i) * 1000);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    // 240 bytes in a 100-byte share: the three least recently used go (180, 120, then 60 bytes left).
    const gone = await t.index.missing(blobs.map((b) => ({ hash: b.digest.hash, size: 60 })), false);
    expect(gone.map((d) => d.hash)).toEqual(blobs.slice(0, 3).map((b) => b.digest.hash));
  });
});

describe("eviction by idle time", () => {
  it("evicts blobs unused for CAS_MAX_IDLE_DAYS, keeps the others, and counts them", async () => {
    const t = setup({ CAS_MAX_IDLE_DAYS: "7" });
    const blobs = await blobsInShard(t.tenant, "e", 4, 50);
    await store(t, blobs);
    const now = Date.now();
    const ago = [8 * DAY, 6 * DAY, 30 * DAY, HOUR];
    for (const [i, b] of blobs.entries()) await lastUsedAt(t, b, now - ago[i]!);
    expect(await evictStep(t, blobs[0]!.digest.hash, { now })).toEqual({ evicted: 2, bytes: 100, more: false });
    expect(await missing(t, blobs)).toEqual(new Set([blobs[0]!.digest.hash, blobs[2]!.digest.hash]));
    const stats = await admin(t, "GET", `/admin/cas/stats?tenant=${t.tenant}`);
    expect(stats.body.tenants[0].counters).toMatchObject({ evicted_idle: 2, evicted_budget: 0 });
  });

  it("the shard's alarm runs eviction on its own", async () => {
    const { runDurableObjectAlarm } = await import("cloudflare:test");
    const t = setup({ CAS_MAX_IDLE_DAYS: "1" });
    const blobs = await blobsInShard(t.tenant, "f", 2, 40);
    await store(t, blobs);
    await lastUsedAt(t, blobs[0]!, Date.now() - 2 * DAY);
    expect(await runDurableObjectAlarm(t.index.shard(blobs[0]!.digest.hash))).toBe(true);
    expect(await missing(t, blobs)).toEqual(new Set([blobs[0]!.digest.hash]));
    expect(await Promise.all(blobs.map((b) => bytesHeld(t, b)))).toEqual([false, true]);
    // It set its next alarm (the remaining blob's idle deadline).
    const next = await runInDurableObject(t.index.shard(blobs[0]!.digest.hash), (_o, s) => s.storage.getAlarm());
    expect(next).toBeGreaterThan(Date.now());
  });
});

describe("index before R2", () => {
  it("between the two steps, the row is gone and the object still there; a crash there leaves only an orphan object", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const blobs = await blobsInShard(t.tenant, "0", 2, R2_BLOB_BYTES);
    await store(t, blobs);
    const seen: { rows: number; objects: boolean[]; missing: number }[] = [];
    const stub = t.index.shard(blobs[0]!.digest.hash);
    const crash = runInDurableObject(stub, (o: CasIndexDO, state) =>
      o.evictStep({
        now: Date.now() + 1000,
        beforeObjectDelete: async (hashes) => {
          const rows = state.storage.sql.exec(`SELECT COUNT(*) AS n FROM blobs WHERE hash IN (SELECT value FROM json_each(?))`, JSON.stringify(hashes)).one().n as number;
          seen.push({ rows, objects: await Promise.all(blobs.map((b) => objectExists(t, b))), missing: (await missing(t, blobs)).size });
          throw new Error("injected crash between the index and R2");
        },
      }),
    );
    await expect(crash).rejects.toThrow(/injected crash/);
    // At the fault: no rows, both objects, and FindMissing already says missing.
    expect(seen).toEqual([{ rows: 0, objects: [true, true], missing: 2 }]);
    // After it: still consistent in the safe direction (objects without rows: re-uploaded or reconciled).
    expect((await missing(t, blobs)).size).toBe(2);
    expect(await Promise.all(blobs.map((b) => objectExists(t, b)))).toEqual([true, true]);
  });

  it("a write whose object landed before the eviction deleted it is not recorded: the writer is told to retry", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const [b] = await blobsInShard(t.tenant, "1", 1, R2_BLOB_BYTES);
    await store(t, [b!]);
    const stub = t.index.shard(b!.digest.hash);
    const pair: [string, number] = [b!.digest.hash, R2_BLOB_BYTES];
    const owner = { tenant: t.tenant, shards: 16, sweepsActionCache: false };
    let during: Promise<string[]> | undefined;
    await runInDurableObject(stub, (o: CasIndexDO) =>
      o.evictStep({
        now: Date.now() + 1000,
        // A writer's add arrives while the object is being deleted (its put landed earlier).
        beforeObjectDelete: async () => {
          during = t.index.shard(b!.digest.hash).add([pair], owner);
        },
      }),
    );
    expect(await during).toEqual([b!.digest.hash]);
    // One arriving after the eviction finished is checked against R2 too.
    expect(await stub.add([pair], owner)).toEqual([b!.digest.hash]);
    expect(await missing(t, [b!])).toEqual(new Set([b!.digest.hash]));
    // Through the service, the writer sees UNAVAILABLE only when its object is gone; a real upload records it.
    await store(t, [b!]);
    expect(await missing(t, [b!])).toEqual(new Set());
    expect(await objectExists(t, b!)).toBe(true);
  });

  it("an add waiting on R2 for one blob does not record another the alarm evicted meanwhile", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const [a, b] = await blobsInShard(t.tenant, "3", 2, R2_BLOB_BYTES);
    await store(t, [a!, b!]);
    const now = Date.now();
    await lastUsedAt(t, a!, now - 2000);
    await lastUsedAt(t, b!, now - 1000);
    // A is evicted, then written again (its put lands behind the index): its add will look at R2.
    expect((await evictStep(t, a!.digest.hash, { now, limit: 1 })).evicted).toBe(1);
    await env.CAS.put(`cas/${t.tenant}/${a!.digest.hash}`, a!.data);
    const stub = t.index.shard(a!.digest.hash);
    const owner = { tenant: t.tenant, shards: 16, sweepsActionCache: false };
    const keyA = `cas/${t.tenant}/${a!.digest.hash}`;
    // The add, the eviction and the gate all in the object's context (see withObjectBucket).
    const lost = await runInDurableObject(stub, (o: CasIndexDO) => {
      let held!: ReturnType<typeof heldBucket>;
      return withObjectBucket(o, (base) => (held = heldBucket((op, k) => op === "head" && k === keyA, base)).env, async () => {
        const adding = o.add([[a!.digest.hash, R2_BLOB_BYTES], [b!.digest.hash, R2_BLOB_BYTES]], owner);
        await held.reached;
        // While the add waits on R2 for A, the alarm's step evicts B (row, then object).
        expect((await o.evictStep({ now: Date.now() + 1000, limit: 1 })).evicted).toBe(1);
        held.release();
        return adding;
      });
    });
    expect(await objectExists(t, b!)).toBe(false);
    // B is reported lost (its writer uploads it again), not recorded over a deleted object.
    expect(lost).toEqual([b!.digest.hash]);
    expect(await t.index.missing([a!, b!].map((x) => ({ hash: x.digest.hash, size: R2_BLOB_BYTES })), false)).toEqual([{ hash: b!.digest.hash, size: R2_BLOB_BYTES }]);
    expect(await objectExists(t, a!)).toBe(true);
  });

  it("the service answers UNAVAILABLE for a write that raced an eviction", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const [b] = await blobsInShard(t.tenant, "2", 1, 40);
    await store(t, [b!]);
    await evictStep(t, b!.digest.hash, { now: Date.now() + 1000 });
    // The race, replayed: the object is put again behind the index, and its add is refused only
    // if the object is gone; here it is there, so the add is accepted.
    await env.CAS.put(`cas/${t.tenant}/${b!.digest.hash}`, b!.data);
    await expect(t.index.add([{ hash: b!.digest.hash, size: 40 }])).resolves.toBeUndefined();
    await evictStep(t, b!.digest.hash, { now: Date.now() + 1000 });
    const err = await t.index.add([{ hash: b!.digest.hash, size: 40 }]).catch((e) => e);
    expect(err.code).toBe(Code.Unavailable);
    expect(String(err.message)).toMatch(/evicted while being written/);
  });
});

describe("R2 failing an eviction's delete", () => {
  it("the next alarm deletes the objects (not one uploaded again meanwhile), the counts add up, and a failed alarm sets the next", async () => {
    const { runDurableObjectAlarm } = await import("cloudflare:test");
    const t = setup({ CAS_MAX_IDLE_DAYS: "1" });
    const blobs = await blobsInShard(t.tenant, "5", 3, R2_BLOB_BYTES);
    await store(t, blobs);
    for (const b of blobs.slice(0, 2)) await lastUsedAt(t, b, Date.now() - 2 * DAY);
    const stub = t.index.shard(blobs[0]!.digest.hash);
    const failure = await runInDurableObject(stub, async (o: CasIndexDO, state) => {
      await state.storage.deleteAlarm();
      const err = await withObjectBucket(o, (base) => failingBucket((op) => op === "delete", "before", base), () => o.alarm().then(() => null, (e: unknown) => String(e)));
      return { err, alarm: await state.storage.getAlarm() };
    });
    expect(failure.err).toMatch(/injected: R2 delete/);
    expect(failure.alarm).toBeGreaterThan(Date.now());
    // Rows gone, objects still there.
    expect(await missing(t, blobs)).toEqual(new Set([blobs[0]!.digest.hash, blobs[1]!.digest.hash]));
    expect(await Promise.all(blobs.map((b) => objectExists(t, b)))).toEqual([true, true, true]);
    // Blob 0 is uploaded again before the retry: its object must outlive it.
    await store(t, [blobs[0]!]);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await Promise.all(blobs.map((b) => objectExists(t, b)))).toEqual([true, false, true]);
    expect(await missing(t, blobs)).toEqual(new Set([blobs[1]!.digest.hash]));
    const stats = await admin(t, "GET", `/admin/cas/stats?tenant=${t.tenant}`);
    expect(stats.body.tenants[0]).toMatchObject({ bytes: 2 * R2_BLOB_BYTES, blobs: 2 });
    expect(stats.body.tenants[0].counters).toMatchObject({ evicted_idle: 2, evicted_bytes: 2 * R2_BLOB_BYTES });
  });
});

describe("reconcile racing a pending delete", () => {
  it("a reconcile waiting on R2 does not record a blob whose object the alarm deleted meanwhile", async () => {
    const t = setup({ CAS_MAX_IDLE_DAYS: "1" });
    const [a, b] = await blobsInShard(t.tenant, "7", 2, R2_BLOB_BYTES);
    await store(t, [a!, b!]);
    for (const x of [a!, b!]) await lastUsedAt(t, x, Date.now() - 2 * DAY);
    const stub = t.index.shard(a!.digest.hash);
    // Both evicted while R2's delete fails: rows gone, objects left, both pending a delete.
    await runInDurableObject(stub, async (o: CasIndexDO, state) => {
      await state.storage.deleteAlarm();
      await withObjectBucket(o, (base) => failingBucket((op) => op === "delete", "before", base), () => o.alarm().catch(() => {}));
    });
    expect(await Promise.all([a!, b!].map((x) => objectExists(t, x)))).toEqual([true, true]);
    const owner = { tenant: t.tenant, shards: 16, sweepsActionCache: false };
    const keyA = `cas/${t.tenant}/${a!.digest.hash}`;
    const result = await runInDurableObject(stub, (o: CasIndexDO) => {
      let held!: ReturnType<typeof heldBucket>;
      return withObjectBucket(o, (base) => (held = heldBucket((op, k) => op === "head" && k === keyA, base)).env, async () => {
        // A reconcile lists both objects (no rows, evicted lately: it looks at R2 before adding).
        const reconciling = o.reconcileRange("", null, [[a!.digest.hash, R2_BLOB_BYTES], [b!.digest.hash, R2_BLOB_BYTES]], Date.now(), owner);
        await held.reached;
        await new Promise((r) => setTimeout(r, 100)); // B's look at R2 (not held) has answered "there"
        // Meanwhile the alarm retries the pending deletes: both objects go.
        await o.alarm();
        held.release();
        return reconciling;
      });
    });
    expect(await Promise.all([a!, b!].map((x) => objectExists(t, x)))).toEqual([false, false]);
    expect(result.added).toBe(0);
    expect(await missing(t, [a!, b!])).toEqual(new Set([a!.digest.hash, b!.digest.hash]));
  });
});

describe("split records", () => {
  it("a blob's split record goes with its object, a delete R2 failed included", async () => {
    const { runDurableObjectAlarm } = await import("cloudflare:test");
    const t = setup({ CAS_MAX_IDLE_DAYS: "1" });
    const [b] = await blobsInShard(t.tenant, "6", 1, R2_BLOB_BYTES);
    await store(t, [b!]);
    expect((await t.cas.splitBlob({ blobDigest: b!.digest })).chunkDigests).toHaveLength(1);
    const records = async () => (await env.CAS.list({ prefix: `splits/${t.tenant}/${b!.digest.hash}/` })).objects.length;
    expect(await records()).toBe(1);
    await lastUsedAt(t, b!, Date.now() - 2 * DAY);
    const stub = t.index.shard(b!.digest.hash);
    const failed = await runInDurableObject(stub, (o: CasIndexDO) =>
      withObjectBucket(o, (base) => failingBucket((op) => op === "delete", "before", base), () => o.alarm().then(() => false, () => true)),
    );
    expect([failed, await records(), await objectExists(t, b!)]).toEqual([true, 1, true]);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect([await records(), await objectExists(t, b!)]).toEqual([0, false]);
  });
});

describe("what extends a blob's lifetime", () => {
  it("SplitBlob, the first time (the blob is read and cut) and once its split is recorded", async () => {
    const t = setup({ CAS_MIN_LIFETIME_HOURS: "0" });
    // Several chunks, none of them the blob itself (storing a chunk equal to it would touch it).
    const data = pseudoRandom(3 * 1024 * 1024, Date.now() % 1000);
    const b = { data, digest: await digestOf(data) };
    const put = await SELF.fetch(`http://kiln/uploads/${crypto.randomUUID()}/blobs/${b.digest.hash}/${b.digest.sizeBytes}`, { method: "PUT", body: data, headers: t.headers });
    expect(put.status).toBe(200);
    const lastAccess = () =>
      runInDurableObject(t.index.shard(b!.digest.hash), (_o: CasIndexDO, state) =>
        state.storage.sql.exec<{ last_access: number }>(`SELECT last_access FROM blobs WHERE hash = ?`, b!.digest.hash).one().last_access,
      );
    for (const pass of ["first split", "recorded split"]) {
      await lastUsedAt(t, b!, 1000);
      expect((await t.cas.splitBlob({ blobDigest: b!.digest })).chunkDigests.length, pass).toBeGreaterThan(1);
      expect(await lastAccess(), pass).toBeGreaterThan(1000);
    }
  });

  // Writes of a blob stored already answer "stored" without storing it: the client then relies on
  // it (Bazel's HTTP cache PUTs outputs, then the action's entry, and never asks FindMissing).
  const alreadyStored: [string, (t: Tenant, b: TestBlob) => Promise<void>][] = [
    [
      "an HTTP cache PUT",
      async (t, b) => {
        const put = await SELF.fetch(`http://kiln/cache/cas/${b.digest.hash}`, { method: "PUT", body: b.data, headers: t.headers });
        expect(put.status).toBeLessThan(300);
      },
    ],
    [
      "a ByteStream Write that completes early",
      async (t, b) => {
        const resourceName = `uploads/${crypto.randomUUID()}/blobs/${b.digest.hash}/${b.digest.sizeBytes}`;
        const w = await grpcWebClient(ByteStream, t.headers).write((async function* () {
          yield { resourceName, writeOffset: 0n, data: b.data.subarray(0, 10) };
        })());
        expect(w.committedSize).toBe(b.digest.sizeBytes);
      },
    ],
  ];
  for (const [what, write] of alreadyStored) {
    it(`${what} of a blob stored already`, async () => {
      const t = setup();
      // Over the 64 KiB up to which an HTTP PUT stores without asking the index.
      const data = pseudoRandom(100 * 1024, Date.now() % 1000);
      const b = { data, digest: await digestOf(data) };
      await store(t, [b]);
      await lastUsedAt(t, b, Date.now() - 10 * DAY);
      await write(t, b);
      expect((await evictStep(t, b.digest.hash, { now: Date.now(), maxIdleMs: DAY })).evicted).toBe(0);
      expect(await objectExists(t, b)).toBe(true);
    });
  }

  it("UpdateActionResult's check of the blobs the entry references", async () => {
    const t = setup();
    const [out] = await blobsInShard(t.tenant, "7", 1, 100);
    await store(t, [out!]);
    await lastUsedAt(t, out!, Date.now() - 10 * DAY);
    const actionDigest = await digestOf(`action ${crypto.randomUUID()}`);
    await connectClient(ActionCache, t.headers).updateActionResult({ actionDigest, actionResult: { outputFiles: [{ path: "out", digest: out!.digest }] } });
    expect((await evictStep(t, out!.digest.hash, { now: Date.now(), maxIdleMs: DAY })).evicted).toBe(0);
  });

  it("Execute's check of an action: its Action, Command and Directories, not only its input files", async () => {
    const t = setup();
    const blob = async (data: Uint8Array) => ({ data, digest: await digestOf(data) });
    const file = await blob(new TextEncoder().encode(`input ${crypto.randomUUID()}`));
    const sub = await blob(toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: "in.txt", digest: file.digest }] })));
    const root = await blob(toBinary(DirectorySchema, create(DirectorySchema, { directories: [{ name: "sub", digest: sub.digest }] })));
    const command = await blob(toBinary(CommandSchema, create(CommandSchema, { arguments: ["/bin/true", crypto.randomUUID()] })));
    const action = await blob(toBinary(ActionSchema, create(ActionSchema, { commandDigest: command.digest, inputRootDigest: root.digest })));
    const all = [file, sub, root, command, action];
    await store(t, all);
    for (const b of all) await lastUsedAt(t, b, Date.now() - 10 * DAY);
    await checkAction(new BlobStore(env, t.tenant), { hash: action.digest.hash, size: Number(action.digest.sizeBytes) });
    // A step on each blob's shard (they may share one): none is idle any more.
    for (const b of all) expect((await evictStep(t, b.digest.hash, { now: Date.now(), maxIdleMs: DAY })).evicted).toBe(0);
  });
});
