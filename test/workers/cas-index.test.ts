// The CAS index at scale: the shard count setting, coarse touches, the existence cache and the
// settings that bound them, against real CasIndexDO objects.
import { SELF, env, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { Code } from "../../src/errors.ts";
import { parseCasIndexConfig, type CasIndexConfig } from "../../src/storage/cas-index-config.ts";
import { CasIndex, shardName, shardOf } from "../../src/storage/cas-index.ts";
import type { BlobDigest } from "../../src/storage/digest.ts";
import { ExistenceCache } from "../../src/storage/existence-cache.ts";
import type { CasIndexDO } from "../../durable-objects/cas-index.ts";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { connectClient, digestOf, errorOf, sha256Hex } from "./helpers.ts";

const HOUR = 3600_000;
const config = (o: Partial<CasIndexConfig> = {}): CasIndexConfig => ({
  shards: 16,
  touchIntervalMs: HOUR,
  existenceTtlMs: 0,
  existenceEntries: 0,
  minLifetimeMs: 3 * HOUR,
  ...o,
});
const noCache = () => new ExistenceCache(0, 0);
const tenant = () => `t-${crypto.randomUUID().slice(0, 8)}`;

async function digests(n: number, seed = crypto.randomUUID()): Promise<BlobDigest[]> {
  return Promise.all(Array.from({ length: n }, async (_, i) => ({ hash: await sha256Hex(`${seed}:${i}`), size: 10 + i })));
}

/** A fake clock for one index object: returns a setter of its time. */
async function clockOf(index: CasIndex, hash: string) {
  let t = 0;
  await runInDurableObject(index.shard(hash), (o: CasIndexDO) => void (o.now = () => t));
  return (ms: number) => void (t = ms);
}

const lastAccess = (index: CasIndex, hash: string) =>
  runInDurableObject(index.shard(hash), (o: CasIndexDO, state) =>
    state.storage.sql.exec<{ last_access: number }>(`SELECT last_access FROM blobs WHERE hash = ?`, hash).one().last_access,
  );

describe("shard routing", () => {
  it("sends a digest to the same shard every time, and 16 shards to its first hex digit", async () => {
    for (const d of await digests(200)) {
      expect(shardOf(d.hash, 16)).toBe(parseInt(d.hash[0]!, 16));
      expect(shardName("x", shardOf(d.hash, 16), 16)).toBe(`x:${d.hash[0]}`);
      for (const n of [1, 5, 64, 1000]) {
        const s = shardOf(d.hash, n);
        expect(s).toBe(shardOf(d.hash, n));
        expect(s).toBeGreaterThanOrEqual(0);
        expect(s).toBeLessThan(n);
      }
    }
    expect(shardOf("f".repeat(64), 65_536)).toBe(65_535);
    expect(shardOf("0".repeat(64), 7)).toBe(0);
  });

  it("with 5 shards, stores each digest in its shard and uses every shard", async () => {
    const index = new CasIndex(env, tenant(), { config: config({ shards: 5 }), cache: noCache() });
    const ds = await digests(100);
    await index.add(ds);
    expect(await index.missing(ds)).toEqual([]);
    const counts = await Promise.all([0, 1, 2, 3, 4].map(async (s) => (await index.shardStub(s).servedStats()).blobs));
    expect(counts.every((n) => n > 0)).toBe(true);
    expect(counts.reduce((a, b) => a + b)).toBe(100);
    for (const d of ds.slice(0, 20)) {
      expect(await index.shardStub(shardOf(d.hash, 5)).present(JSON.stringify([d.hash]), [d.size], false)).toEqual([0]);
    }
  });

  it("refuses a shard count other than the one the tenant's index was built with", async () => {
    const t = tenant();
    const [d] = await digests(1);
    await new CasIndex(env, t, { config: config({ shards: 5 }), cache: noCache() }).add([d!]);
    const err = await errorOf(new CasIndex(env, t, { config: config({ shards: 8 }), cache: noCache() }).missing([d!]));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(/CAS_INDEX_SHARDS is 8 .* built with 5 shards/);
    expect(await new CasIndex(env, t, { config: config({ shards: 5 }), cache: noCache() }).missing([d!])).toEqual([]);
  });
});

describe("coarse touches", () => {
  it("rewrites last_access at most once per touch interval", async () => {
    const index = new CasIndex(env, tenant(), { config: config({ touchIntervalMs: HOUR }), cache: noCache() });
    const [d] = await digests(1);
    const setTime = await clockOf(index, d!.hash);
    const t0 = 1_000 * HOUR;
    setTime(t0);
    await index.add([d!]);
    expect(await lastAccess(index, d!.hash)).toBe(t0);
    const written = async () => (await index.shard(d!.hash).servedStats()).rowsWritten;
    const before = await written();

    setTime(t0 + HOUR / 2);
    expect(await index.missing([d!], true)).toEqual([]);
    expect(await lastAccess(index, d!.hash)).toBe(t0);
    expect(await written()).toBe(before);

    setTime(t0 + HOUR + 1);
    expect(await index.missing([d!], true)).toEqual([]);
    expect(await lastAccess(index, d!.hash)).toBe(t0 + HOUR + 1);
    // The row, and its entry in eviction's last_access index.
    expect(await written()).toBeGreaterThan(before);
    expect(await written()).toBeLessThanOrEqual(before + 2);

    // Lookups that do not touch never write, however stale.
    setTime(t0 + 5 * HOUR);
    expect(await index.missing([d!], false)).toEqual([]);
    expect(await lastAccess(index, d!.hash)).toBe(t0 + HOUR + 1);
  });

  it("in one call of many, finds and touches exactly the stale rows asked under their own sizes", async () => {
    // One shard, so that a single present() sees all of it: fresh and stale rows interleaved,
    // absent digests between them, and stale rows asked under a wrong size (not found, not touched).
    const index = new CasIndex(env, tenant(), { config: config({ shards: 1, touchIntervalMs: HOUR }), cache: noCache() });
    const ds = await digests(30);
    const setTime = await clockOf(index, ds[0]!.hash);
    const t0 = 1_000 * HOUR;
    const stale = ds.slice(0, 10), fresh = ds.slice(10, 20), absent = ds.slice(20);
    setTime(t0);
    await index.add(stale);
    setTime(t0 + HOUR);
    await index.add(fresh);
    setTime(t0 + HOUR + 1);
    const wrongSize = stale.slice(0, 3).map((d) => ({ hash: d.hash, size: d.size + 1 }));
    const asked = [...wrongSize, ...stale.slice(3).flatMap((d, i) => [d, fresh[i]!, absent[i]!]), ...fresh.slice(7), ...absent.slice(7)];
    const missing = await index.missing(asked, true);
    expect(missing).toEqual([...wrongSize, ...absent.slice(0, 7), ...absent.slice(7)]);
    for (const d of stale) expect(await lastAccess(index, d.hash)).toBe(wrongSize.some((w) => w.hash === d.hash) ? t0 : t0 + HOUR + 1);
    for (const d of fresh) expect(await lastAccess(index, d.hash)).toBe(t0 + HOUR);
  });

  it("with an interval of 0, touches on every call (the old behaviour)", async () => {
    const index = new CasIndex(env, tenant(), { config: config({ touchIntervalMs: 0 }), cache: noCache() });
    const [d] = await digests(1);
    const setTime = await clockOf(index, d!.hash);
    setTime(5_000);
    await index.add([d!]);
    setTime(5_001);
    await index.missing([d!]);
    expect(await lastAccess(index, d!.hash)).toBe(5_001);
  });
});

describe("existence cache", () => {
  it("expires entries by TTL and drops the oldest answer beyond its size", () => {
    let t = 0;
    const c = new ExistenceCache(1000, 2, () => t);
    const [a, b, c2, d] = ["a", "b", "c", "d"].map((x) => ({ hash: x.repeat(64), size: 1 }));
    c.add("t", a!);
    expect(c.has("t", a!)).toBe(true);
    expect(c.has("t", { ...a!, size: 2 })).toBe(false); // the size is part of the answer
    expect(c.has("other tenant", a!)).toBe(false);
    expect(c.has("t", b!)).toBe(false);
    t = 999;
    expect(c.has("t", a!)).toBe(true);
    t = 1000;
    expect(c.has("t", a!)).toBe(false);
    c.add("t", a!);
    c.add("t", b!);
    expect(c.has("t", a!)).toBe(true); // a hit does not make an answer younger
    c.add("t", c2!);
    expect([c.has("t", a!), c.has("t", b!), c.has("t", c2!), c.size]).toEqual([false, true, true, 2]);
    c.add("t", b!); // a new answer does
    c.add("u", d!); // another tenant's answers count against the same bound
    expect([c.has("t", b!), c.has("t", c2!), c.has("u", d!), c.size]).toEqual([true, false, true, 2]);
    c.forget("t", b!.hash);
    expect([c.has("t", b!), c.size]).toEqual([false, 1]);
    expect(new ExistenceCache(0, 10).size).toBe(0);
    const off = new ExistenceCache(0, 10, () => t);
    off.add("t", a!);
    expect(off.has("t", a!)).toBe(false);
  });

  it("answers positives without the index, never negatives, and stops after its TTL", async () => {
    let t = 10 * HOUR;
    const cache = new ExistenceCache(60_000, 1000, () => t);
    const index = new CasIndex(env, tenant(), { config: config({ existenceTtlMs: 60_000, existenceEntries: 1000 }), cache });
    const [kept, gone, late] = await digests(3);
    await index.add([kept!, gone!]);
    const served = async (d: BlobDigest) => (await index.shard(d.hash).servedStats()).requests;

    // Present, from the cache: the index objects are not asked.
    const before = await served(kept!);
    expect(await index.missing([kept!, gone!])).toEqual([]);
    expect(await served(kept!)).toBe(before);

    // A row removed behind the cache's back is still reported present until the TTL...
    await index.shard(gone!.hash).remove([gone!.hash]);
    expect(await index.missing([gone!])).toEqual([]);
    t += 60_000;
    // ...and not after it.
    expect(await index.missing([gone!])).toEqual([gone!]);

    // A negative answer is not remembered: the blob is present as soon as the index has it.
    expect(await index.missing([late!])).toEqual([late!]);
    await index.shard(late!.hash).add([[late!.hash, late!.size]]);
    expect(await index.missing([late!])).toEqual([]);
    // That positive answer of the index is cached like one of an upload through this client.
    await index.shard(late!.hash).remove([late!.hash]);
    expect(await index.missing([late!])).toEqual([]);
    t += 60_000;
    expect(await index.missing([late!])).toEqual([late!]);
  });
});

describe("existence cache and touches", () => {
  it("remembers only answers that touched: a lookup without a touch (a Tree's, inside a completeness check) leaves the next touching lookup to the index", async () => {
    const cache = new ExistenceCache(300_000, 1000);
    const t = tenant();
    const index = new CasIndex(env, t, { config: config({ touchIntervalMs: HOUR, existenceTtlMs: 300_000, existenceEntries: 1000 }), cache });
    const [d] = await digests(1);
    const setTime = await clockOf(index, d!.hash);
    const t0 = 2_000 * HOUR;
    setTime(t0 - 3 * HOUR + 60_000); // last used almost three hours ago, near its eviction
    await index.add([d!]);
    cache.forget(t, d!.hash); // as in another isolate, which never saw the write
    setTime(t0);
    expect(await index.missing([d!], false)).toEqual([]);
    expect(await lastAccess(index, d!.hash)).toBe(t0 - 3 * HOUR + 60_000); // not touched
    expect(await index.has(d!)).toBe(true); // has() touches (its callers answer "present")
    expect(await lastAccess(index, d!.hash)).toBe(t0); // the touching lookup reached the index
    // Once touched, the answer is remembered: the next touching lookup is the cache's.
    const asked = (await index.shard(d!.hash).servedStats()).requests;
    expect(await index.missing([d!], true)).toEqual([]);
    expect((await index.shard(d!.hash).servedStats()).requests).toBe(asked);
  });
});

describe("settings", () => {
  it("defaults to 16 shards, 1 h touches and a 5 min cache below a 3 h minimum lifetime", () => {
    expect(parseCasIndexConfig({})).toEqual({ shards: 16, touchIntervalMs: HOUR, existenceTtlMs: 300_000, existenceEntries: 50_000, minLifetimeMs: 3 * HOUR });
    expect(parseCasIndexConfig({ CAS_INDEX_SHARDS: "1000", CAS_EXISTENCE_CACHE_SECONDS: "0" }).shards).toBe(1000);
  });

  it("refuses a cache TTL at or above the minimum lifetime, also with the touch interval added", () => {
    const refused = (vars: Record<string, string>) => {
      try {
        parseCasIndexConfig(vars);
      } catch (e) {
        return e as { code: Code; rawMessage: string };
      }
      throw new Error(`accepted ${JSON.stringify(vars)}`);
    };
    const atMin = refused({ CAS_EXISTENCE_CACHE_SECONDS: "10800", CAS_TOUCH_INTERVAL_SECONDS: "0" });
    expect(atMin.code).toBe(Code.Unavailable);
    expect(atMin.rawMessage).toMatch(/CAS_EXISTENCE_CACHE_SECONDS \(10800\) \+ CAS_TOUCH_INTERVAL_SECONDS \(0\) must be below CAS_MIN_LIFETIME_HOURS \(3 h = 10800 s\)/);
    expect(refused({ CAS_EXISTENCE_CACHE_SECONDS: "20000" }).rawMessage).toMatch(/CAS_MIN_LIFETIME_HOURS/);
    expect(refused({ CAS_EXISTENCE_CACHE_SECONDS: "1800", CAS_TOUCH_INTERVAL_SECONDS: "9000" }).rawMessage).toMatch(/must be below/);
    expect(refused({ CAS_MIN_LIFETIME_HOURS: "0.5" }).rawMessage).toMatch(/must be below CAS_MIN_LIFETIME_HOURS \(0.5 h = 1800 s\)/);
    expect(refused({ CAS_MIN_LIFETIME_HOURS: "0", CAS_TOUCH_INTERVAL_SECONDS: "0", CAS_EXISTENCE_CACHE_SECONDS: "1" }).rawMessage).toMatch(/must be below/);
    // With nothing cached and every touch written, any minimum lifetime is accepted, 0 included (tests).
    expect(parseCasIndexConfig({ CAS_MIN_LIFETIME_HOURS: "0", CAS_TOUCH_INTERVAL_SECONDS: "0", CAS_EXISTENCE_CACHE_SECONDS: "0" }).minLifetimeMs).toBe(0);
    // Just below is accepted.
    expect(parseCasIndexConfig({ CAS_EXISTENCE_CACHE_SECONDS: "1799", CAS_TOUCH_INTERVAL_SECONDS: "9000" }).existenceTtlMs).toBe(1_799_000);
    expect(refused({ CAS_INDEX_SHARDS: "0" }).rawMessage).toMatch(/CAS_INDEX_SHARDS is 0; it must be from 1 to 65536/);
    expect(refused({ CAS_INDEX_SHARDS: "65537" }).rawMessage).toMatch(/CAS_INDEX_SHARDS/);
    expect(refused({ CAS_INDEX_SHARDS: "4.5" }).rawMessage).toMatch(/CAS_INDEX_SHARDS is "4.5"/);
    expect(refused({ CAS_TOUCH_INTERVAL_SECONDS: "soon" }).rawMessage).toMatch(/CAS_TOUCH_INTERVAL_SECONDS is "soon"/);
  });
});

describe("a misconfigured deployment", () => {
  const configured = env.CAS_EXISTENCE_CACHE_SECONDS;
  afterEach(() => {
    env.CAS_EXISTENCE_CACHE_SECONDS = configured;
  });

  it("answers FindMissingBlobs UNAVAILABLE naming the settings, not with a stale blob", async () => {
    env.CAS_EXISTENCE_CACHE_SECONDS = "10800";
    const err = await errorOf(connectClient(ContentAddressableStorage).findMissingBlobs({ blobDigests: [await digestOf("x")] }));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(/CAS_EXISTENCE_CACHE_SECONDS \(10800\) \+ CAS_TOUCH_INTERVAL_SECONDS \(3600\) must be below/);
  });
});

describe("GET /admin/cas-index", () => {
  it("lists every shard of the caller's tenant with what it served", async () => {
    const res = await SELF.fetch("http://kiln/admin/cas-index");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { tenant: string; shards: number; objects: { shard: number; requests: number; blobs: number }[] };
    expect(body.tenant).toBe("default");
    expect(body.shards).toBe(16);
    expect(body.objects.map((o) => o.shard)).toEqual([...Array(16).keys()]);
    expect((await SELF.fetch("http://kiln/admin/cas-index?from=x")).status).toBe(400);
  });

  it("is for admin keys only", async () => {
    const admin = "cas-index-admin-key-0123456789-0123456789";
    const user = "cas-index-user-key-0123456789-0123456789";
    env.API_KEYS = JSON.stringify([
      { key: admin, name: "ops", admin: true },
      { key: user, name: "ci" },
    ]);
    try {
      expect((await SELF.fetch("http://kiln/admin/cas-index")).status).toBe(401);
      expect((await SELF.fetch("http://kiln/admin/cas-index", { headers: { authorization: `Bearer ${user}` } })).status).toBe(403);
      expect((await SELF.fetch("http://kiln/admin/cas-index", { headers: { authorization: `Bearer ${admin}` } })).status).toBe(200);
    } finally {
      delete env.API_KEYS;
    }
  });
});
