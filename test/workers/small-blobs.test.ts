// Small blobs (SMALL_BLOB_MAX_BYTES and under) are kept in their CAS index shard, not in R2: every
// write path puts them there and every read path finds them, with ranges; the worker verifies
// them as R2 would; blobs stored in R2 before are still read; and the index's failures, before or
// after a write lands, lose or double nothing.
import { SELF, env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CasIndexDO } from "../../durable-objects/cas-index.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { SMALL_BLOB_MAX_BYTES } from "../../src/shared/small-blob-size.ts";
import { admin, blobsInShard, bytesHeld, evictStep, lastUsedAt, missing, objectExists, store, tenantPerTest, type Tenant, type TestBlob } from "./cas-eviction-helpers.ts";
import { failingIndex } from "./fault-injection.ts";
import { codeOf, digestOf, grpcWebClient, pseudoRandom, sha256Hex } from "./helpers.ts";
import { scrape } from "./metrics-helpers.ts";

const equalBytes = (a: Uint8Array, b: Uint8Array) => a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);

const setup = tenantPerTest();

async function testBlob(size: number, seed: number): Promise<TestBlob> {
  const data = pseudoRandom(size, seed);
  return { data, digest: await digestOf(data) };
}

const resource = (b: TestBlob) => `blobs/${b.digest.hash}/${b.digest.sizeBytes}`;

async function readAll(t: Tenant, name: string, readOffset = 0n, readLimit = 0n): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const r of grpcWebClient(ByteStream, t.headers).read({ resourceName: name, readOffset, readLimit })) parts.push(r.data);
  return new Uint8Array(await new Blob(parts).arrayBuffer());
}

const writePaths: [string, (t: Tenant, b: TestBlob) => Promise<void>][] = [
  ["BatchUpdateBlobs", (t, b) => store(t, [b])],
  [
    "ByteStream.Write",
    async (t, b) => {
      const name = `uploads/${crypto.randomUUID()}/${resource(b)}`;
      await grpcWebClient(ByteStream, t.headers).write(
        (async function* () {
          // In two messages: the blob is whole only at finish_write.
          const half = b.data.byteLength >> 1;
          yield { resourceName: name, writeOffset: 0n, data: b.data.subarray(0, half), finishWrite: false };
          yield { resourceName: "", writeOffset: BigInt(half), data: b.data.subarray(half), finishWrite: true };
        })(),
      );
    },
  ],
  [
    "HTTP cache PUT",
    async (t, b) => {
      const res = await SELF.fetch(`http://kiln/cache/cas/${b.digest.hash}`, { method: "PUT", headers: t.headers, body: b.data });
      expect(res.status).toBe(200);
    },
  ],
  [
    "blob HTTP PUT",
    async (t, b) => {
      const res = await SELF.fetch(`http://kiln/uploads/${crypto.randomUUID()}/${resource(b)}`, { method: "PUT", headers: t.headers, body: b.data });
      expect(res.status).toBe(200);
    },
  ],
];

describe("where a blob is kept", () => {
  for (const [name, write] of writePaths) {
    it(`${name}: ${SMALL_BLOB_MAX_BYTES} bytes in the index, one byte more in R2; both read back`, async () => {
      const t = setup();
      const small = await testBlob(SMALL_BLOB_MAX_BYTES, 1);
      const large = await testBlob(SMALL_BLOB_MAX_BYTES + 1, 2);
      await write(t, small);
      await write(t, large);
      expect([await objectExists(t, small), await objectExists(t, large)]).toEqual([false, true]);
      expect([await bytesHeld(t, small), await bytesHeld(t, large)]).toEqual([true, true]);
      expect(await missing(t, [small, large])).toEqual(new Set());
      const r = await t.cas.batchReadBlobs({ digests: [small.digest, large.digest] });
      expect(r.responses.map((x) => x.data)).toEqual([small.data, large.data]);
    });
  }
});

describe("reading a small blob", () => {
  it("ByteStream.Read with offsets and limits, as from R2", async () => {
    const t = setup();
    const b = await testBlob(1000, 3);
    await store(t, [b]);
    expect(await readAll(t, resource(b))).toEqual(b.data);
    expect(await readAll(t, resource(b), 100n, 10n)).toEqual(b.data.subarray(100, 110));
    expect(await readAll(t, resource(b), 990n, 100n)).toEqual(b.data.subarray(990));
    expect((await readAll(t, resource(b), 1000n)).byteLength).toBe(0);
    expect(await codeOf(readAll(t, resource(b), 1001n))).toBe(Code.OutOfRange);
    // Another size under the same hash names nothing.
    expect(await codeOf(readAll(t, `blobs/${b.digest.hash}/999`))).toBe(Code.NotFound);
  });

  it("over HTTP: a Range on the blob route, offsets on the HTTP cache, HEAD with its length", async () => {
    const t = setup();
    const b = await testBlob(2000, 4);
    await store(t, [b]);
    const ranged = await SELF.fetch(`http://kiln/${resource(b)}`, { headers: { ...t.headers, range: "bytes=10-19" } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get("content-range")).toBe("bytes 10-19/2000");
    expect(new Uint8Array(await ranged.arrayBuffer())).toEqual(b.data.subarray(10, 20));
    const whole = await SELF.fetch(`http://kiln/cache/cas/${b.digest.hash}`, { headers: t.headers });
    expect(new Uint8Array(await whole.arrayBuffer())).toEqual(b.data);
    const head = await SELF.fetch(`http://kiln/cache/cas/${b.digest.hash}`, { method: "HEAD", headers: t.headers });
    expect([head.status, head.headers.get("content-length")]).toEqual([200, "2000"]);
  });

  it("a small blob stored in R2 before small blobs were kept in the index is still read", async () => {
    const t = setup();
    const b = await testBlob(500, 5);
    await env.CAS.put(`cas/${t.tenant}/${b.digest.hash}`, b.data);
    await t.index.add([{ hash: b.digest.hash, size: 500 }]);
    expect(await missing(t, [b])).toEqual(new Set());
    expect((await t.cas.batchReadBlobs({ digests: [b.digest] })).responses[0]!.data).toEqual(b.data);
    expect(new Uint8Array(await (await SELF.fetch(`http://kiln/cache/cas/${b.digest.hash}`, { headers: t.headers })).arrayBuffer())).toEqual(b.data);
  });
});

describe("batches of small blobs", () => {
  const BATCH = "connect ContentAddressableStorage.BatchReadBlobs";
  const r2Gets = (m: Map<string, number>) => m.get(`kiln_r2_operations_total{class="B",op="get",request="${BATCH}"}`) ?? 0;
  const indexCalls = (m: Map<string, number>, method: string) => m.get(`kiln_do_requests_total{object="CAS_INDEX",method="${method}",request="${BATCH}"}`) ?? 0;

  it("4,000 in one BatchUpdateBlobs and one BatchReadBlobs, as remote-apis-sdks batches: all back, one index call per shard, no R2 call", { timeout: 120_000 }, async () => {
    const t = setup();
    const blobs = await Promise.all(Array.from({ length: 4_000 }, (_, i) => testBlob(1_000, 1_000 + i)));
    await store(t, blobs);
    const before = await scrape(t.headers);
    const r = await t.cas.batchReadBlobs({ digests: blobs.map((b) => b.digest) });
    const after = await scrape(t.headers);
    expect(r.responses.filter((x, i) => x.status?.code === 0 && equalBytes(x.data, blobs[i]!.data))).toHaveLength(4_000);
    const shards = t.index.shards;
    expect(indexCalls(after, "smallBlobs") - indexCalls(before, "smallBlobs")).toBeLessThanOrEqual(shards);
    expect(indexCalls(after, "smallBlob") - indexCalls(before, "smallBlob")).toBe(0);
    expect(r2Gets(after) - r2Gets(before)).toBe(0);
  });

  it("small digests never stored are NOT_FOUND without asking R2; one recorded without its bytes is read from R2", async () => {
    const t = setup();
    const [stored, inR2, ...never] = await Promise.all(Array.from({ length: 50 }, (_, i) => testBlob(700, 2_000 + i)));
    await store(t, [stored!]);
    await env.CAS.put(`cas/${t.tenant}/${inR2!.digest.hash}`, inR2!.data);
    await t.index.add([{ hash: inR2!.digest.hash, size: 700 }]);
    // The stored blob asked with another size names nothing either.
    const wrongSize = { hash: stored!.digest.hash, sizeBytes: 699n };
    const before = await scrape(t.headers);
    const r = await t.cas.batchReadBlobs({ digests: [stored!.digest, inR2!.digest, wrongSize, ...never.map((b) => b.digest)] });
    const after = await scrape(t.headers);
    expect(r.responses.map((x) => x.status?.code)).toEqual([0, 0, ...Array(49).fill(Code.NotFound)]);
    expect([r.responses[0]!.data, r.responses[1]!.data]).toEqual([stored!.data, inR2!.data]);
    expect(r.responses[2]!.data).toHaveLength(0);
    expect(r2Gets(after) - r2Gets(before)).toBe(1);
  });
});

describe("verified before anything is recorded", () => {
  it("bytes that do not hash to the digest, or too few or too many: INVALID_ARGUMENT and nothing kept", async () => {
    const t = setup();
    const b = await testBlob(800, 6);
    const other = pseudoRandom(800, 7);
    const r = await t.cas.batchUpdateBlobs({
      requests: [
        { digest: b.digest, data: other },
        { digest: b.digest, data: b.data.subarray(0, 799) },
      ],
    });
    expect(r.responses.map((x) => x.status?.code)).toEqual([Code.InvalidArgument, Code.InvalidArgument]);
    expect(r.responses[0]!.status?.message).toMatch(/does not hash to/);
    const put = await SELF.fetch(`http://kiln/cache/cas/${b.digest.hash}`, { method: "PUT", headers: t.headers, body: other });
    expect(put.status).toBe(400);
    const long = new Uint8Array(801);
    long.set(b.data);
    const write = async (data: Uint8Array) =>
      codeOf(
        grpcWebClient(ByteStream, t.headers).write(
          (async function* () {
            yield { resourceName: `uploads/${crypto.randomUUID()}/${resource(b)}`, writeOffset: 0n, data, finishWrite: true };
          })(),
        ),
      );
    expect(await write(long)).toBe(Code.InvalidArgument);
    expect(await write(b.data.subarray(0, 500))).toBe(Code.InvalidArgument);
    expect(await bytesHeld(t, b)).toBe(false);
    expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));
  });
});

describe("faults of the index", () => {
  it("a small write whose index call fails is not kept; written again, it is kept once", async () => {
    const t = setup();
    const [b] = await blobsInShard(`${t.tenant}-w`, "", 1, 300);
    const d = { hash: b!.digest.hash, size: 300 };
    const broken = new BlobStore(failingIndex(["addSmall"], "before"), t.tenant);
    await expect(broken.write(d, new Blob([b!.data]).stream())).rejects.toThrow(/injected/);
    expect(await bytesHeld(t, b!)).toBe(false);
    expect(await missing(t, [b!])).toEqual(new Set([b!.digest.hash]));
    // It landed, but the writer never heard: it writes again (as a client retries), and the blob
    // is there once, its bytes counted once.
    const lost = new BlobStore(failingIndex(["addSmall"], "after"), t.tenant);
    await expect(lost.writeMany([{ d, data: b!.data }])).rejects.toThrow(/injected/);
    expect(await new BlobStore(env, t.tenant).writeMany([{ d, data: b!.data }])).toEqual([undefined]);
    expect((await admin(t, "GET", "/admin/cas/stats")).body.tenants[0]).toMatchObject({ blobs: 1, bytes: 300 });
    expect((await t.cas.batchReadBlobs({ digests: [b!.digest] })).responses[0]!.data).toEqual(b!.data);
  });

  it("a read whose index call fails: UNAVAILABLE for a blob that may be small, R2's blobs still read, nothing healed away", async () => {
    const t = setup();
    const small = await testBlob(100, 8);
    const large = await testBlob(SMALL_BLOB_MAX_BYTES + 10, 9);
    await store(t, [small, large]);
    const broken = new BlobStore(failingIndex(["smallBlob"], "before"), t.tenant);
    const d = (b: TestBlob) => ({ hash: b.digest.hash, size: Number(b.digest.sizeBytes) });
    const unavailable = async (p: Promise<unknown>) => ConnectError.from(await p.then(() => undefined, (e: unknown) => e)).code;
    expect(await unavailable(broken.read(d(small)))).toBe(Code.Unavailable);
    expect(await unavailable(broken.readByHash(small.digest.hash))).toBe(Code.Unavailable);
    expect(await unavailable(broken.sizeOf(small.digest.hash))).toBe(Code.Unavailable);
    const nowhere = await broken.readByHash(await sha256Hex("nowhere")).catch((e: unknown) => ConnectError.from(e));
    expect(nowhere).toMatchObject({ code: Code.Unavailable, rawMessage: expect.stringMatching(/could not be asked for it \(injected: .*\) and R2 does not hold it/) });
    // A blob found in R2 needs no answer from the index.
    const byHash = await broken.readByHash(large.digest.hash);
    expect(new Uint8Array(await new Response(byHash!.body).arrayBuffer())).toEqual(large.data);
    expect(await broken.sizeOf(large.digest.hash)).toBe(large.data.byteLength);
    // Nothing was healed away meanwhile.
    expect(await missing(t, [small, large])).toEqual(new Set());
    expect((await t.cas.batchReadBlobs({ digests: [small.digest] })).responses[0]!.data).toEqual(small.data);
  });
});

describe("faults of the index in a batch read", () => {
  it("its shard call fails: UNAVAILABLE for the small blobs, R2's blobs still read, nothing healed away", async () => {
    const t = setup();
    const small = await testBlob(100, 10);
    const large = await testBlob(SMALL_BLOB_MAX_BYTES + 10, 11);
    await store(t, [small, large]);
    const broken = new BlobStore(failingIndex(["smallBlobs"], "before"), t.tenant);
    const ds = [small, large].map((b) => ({ hash: b.digest.hash, size: Number(b.digest.sizeBytes) }));
    const looked = await broken.smallLookups(ds);
    const reads = await Promise.all(ds.map((d, i) => broken.read(d, 0, 0, looked[i]).then((r) => new Response(r.body).arrayBuffer(), (e: unknown) => ConnectError.from(e))));
    expect(reads[0]).toMatchObject({ code: Code.Unavailable });
    expect(new Uint8Array(reads[1] as ArrayBuffer)).toEqual(large.data);
    expect(await missing(t, [small, large])).toEqual(new Set());
  });
});

describe("with eviction and reconcile", () => {
  it("a small blob written while an eviction deletes its old object is kept", async () => {
    const t = setup({ CAS_MAX_BYTES: "1", CAS_MIN_LIFETIME_HOURS: "0" });
    const [b] = await blobsInShard(t.tenant, "3", 1, 64);
    await store(t, [b!]);
    const stub = t.index.shard(b!.digest.hash);
    await runInDurableObject(stub, (o: CasIndexDO) =>
      o.evictStep({
        now: Date.now() + 1000,
        // The row (and its bytes) are gone; the same blob is written again before R2's delete.
        beforeObjectDelete: async () => {
          await t.index.addSmall([{ d: { hash: b!.digest.hash, size: 64 }, data: b!.data }]);
        },
      }),
    );
    expect(await missing(t, [b!])).toEqual(new Set());
    expect((await t.cas.batchReadBlobs({ digests: [b!.digest] })).responses[0]!.data).toEqual(b!.data);
    // And a later eviction takes it, bytes and all.
    await lastUsedAt(t, b!, Date.now() - 1000);
    expect((await evictStep(t, b!.digest.hash, { now: Date.now() + 1000 })).evicted).toBe(1);
    expect(await bytesHeld(t, b!)).toBe(false);
  });

  it("reconcile, which finds no object for a small blob, leaves it", async () => {
    const t = setup();
    const blobs = await Promise.all([1, 2, 3].map((i) => testBlob(200, 20 + i)));
    await store(t, blobs);
    for (const s of t.index.allShards()) {
      await runInDurableObject(s.stub, (_o, state) => void state.storage.sql.exec(`UPDATE blobs SET last_access = last_access - 7200000`));
    }
    let cursor = "";
    for (let done = false; !done; ) {
      const r = await admin(t, "POST", `/admin/cas/reconcile?cursor=${cursor}`);
      expect(r.body).toMatchObject({ added: 0, removed: 0 });
      ({ cursor, done } = r.body);
    }
    expect(await missing(t, blobs)).toEqual(new Set());
    expect((await t.cas.batchReadBlobs({ digests: blobs.map((b) => b.digest) })).responses.map((r) => r.data)).toEqual(blobs.map((b) => b.data));
  });
});
