// SplitBlob and SpliceBlob when the calls they make fail: a CAS index shard that fails before or
// after it records a blob, an R2 read that breaks off, a split record that cannot be written.
// Each fault must leave nothing half-stored and nothing counted twice, answer with a status a
// client retries (UNAVAILABLE, with the reason), and the call made again must succeed.
import { SELF, env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { Env } from "../../src/env.ts";
import { serverChunker } from "../../src/services/cas-chunking.ts";
import { chunkStream } from "../../src/shared/fastcdc.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { spliceBlob, splitBlob } from "../../src/storage/chunked-blobs.ts";
import type { BlobDigest } from "../../src/storage/digest.ts";
import { admin, missing, objectExists, store, tenantPerTest, type Tenant, type TestBlob } from "./cas-eviction-helpers.ts";
import { failingBucket, failingIndex, type When } from "./fault-injection.ts";
import { digestOf, errorOf, pseudoRandom, sha256Hex } from "./helpers.ts";

const setup = tenantPerTest();
const MiB = 1024 * 1024;

const blobOf = async (data: Uint8Array): Promise<TestBlob> => ({ data, digest: await digestOf(data) });
const testBlob = (size: number, seed: number) => blobOf(pseudoRandom(size, seed));

const digest = (b: TestBlob): BlobDigest => ({ hash: b.digest.hash, size: b.data.byteLength });
const proto = (d: BlobDigest) => ({ hash: d.hash, sizeBytes: BigInt(d.size) });

/** The blob cut as the server cuts it, each chunk a TestBlob. */
async function serverCut(data: Uint8Array): Promise<TestBlob[]> {
  const out: TestBlob[] = [];
  for await (const c of chunkStream([data], serverChunker())) out.push(await blobOf(c));
  return out;
}

const splitRecords = async (t: Tenant) => (await env.CAS.list({ prefix: `splits/${t.tenant}/` })).objects.length;

async function stats(t: Tenant): Promise<{ blobs: number; bytes: number }> {
  const { blobs, bytes } = (await admin(t, "GET", "/admin/cas/stats")).body.tenants[0];
  return { blobs, bytes };
}

/** The error a failed call rejected with, as a client would see it. */

const storeOver = (t: Tenant, faulty: Env) => new BlobStore(faulty, t.tenant);

async function readBack(t: Tenant, b: TestBlob): Promise<string> {
  const r = await new BlobStore(env, t.tenant).read(digest(b));
  return sha256Hex(new Uint8Array(await new Response(r.body).arrayBuffer()));
}

describe("SplitBlob with faults", () => {
  for (const when of ["before", "after"] as When[]) {
    it(`a chunk whose index record fails ${when} reaching its shard: UNAVAILABLE, no split recorded; split again, each chunk is stored once`, async () => {
      const t = setup();
      const blob = await testBlob(3 * MiB + 7, 11);
      await store(t, [blob]);
      const err = await errorOf(splitBlob(storeOver(t, failingIndex(["add"], when)), digest(blob), serverChunker()));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/CAS index.*injected: CAS index add failed/);
      expect(await splitRecords(t)).toBe(0);

      const cut = await serverCut(blob.data);
      expect(cut.length).toBeGreaterThan(2);
      const split = await t.cas.splitBlob({ blobDigest: blob.digest });
      expect(split.chunkDigests.map((c) => c.hash)).toEqual(cut.map((c) => c.digest.hash));
      expect(await missing(t, cut)).toEqual(new Set());
      expect(await splitRecords(t)).toBe(1);
      expect(await stats(t)).toEqual({ blobs: 1 + cut.length, bytes: 2 * blob.data.byteLength });
    });
  }

  it("the blob's read breaks off mid-way: UNAVAILABLE naming the read, no split recorded; split again, it succeeds", async () => {
    const t = setup();
    const blob = await testBlob(2 * MiB + 3, 12);
    await store(t, [blob]);
    const key = `cas/${t.tenant}/${blob.digest.hash}`;
    const err = await errorOf(splitBlob(storeOver(t, failingBucket((op, k) => op === "get" && k === key, "after")), digest(blob), serverChunker()));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(new RegExp(`reading blob ${blob.digest.hash}.*injected: R2 get`));
    expect(await splitRecords(t)).toBe(0);
    const split = await t.cas.splitBlob({ blobDigest: blob.digest });
    expect(split.chunkDigests.map((c) => c.hash)).toEqual((await serverCut(blob.data)).map((c) => c.digest.hash));
  });

  for (const when of ["before", "after"] as When[]) {
    it(`a split record that fails ${when} reaching R2 does not fail the split: its chunks are stored, the next split answers the same`, async () => {
      const t = setup();
      const blob = await testBlob(2 * MiB + 5, 13);
      await store(t, [blob]);
      const faulty = failingBucket((op, k) => op === "put" && k.startsWith("splits/"), when);
      const chunks = await splitBlob(storeOver(t, faulty), digest(blob), serverChunker());
      const cut = await serverCut(blob.data);
      expect(chunks.map((c) => c.hash)).toEqual(cut.map((c) => c.digest.hash));
      expect(await missing(t, cut)).toEqual(new Set());
      expect(await splitRecords(t)).toBe(when === "after" ? 1 : 0);
      const again = await t.cas.splitBlob({ blobDigest: blob.digest });
      expect(again.chunkDigests.map((c) => c.hash)).toEqual(chunks.map((c) => c.hash));
      expect(await stats(t)).toEqual({ blobs: 1 + cut.length, bytes: 2 * blob.data.byteLength });
    });
  }
  for (const when of ["before", "after"] as When[]) {
    it(`a split record R2 fails to read (${when === "before" ? "at once" : "mid-way"}): the blob is cut afresh, the same chunks`, async () => {
      const t = setup();
      const blob = await testBlob(2 * MiB + 1, 14);
      await store(t, [blob]);
      const first = await t.cas.splitBlob({ blobDigest: blob.digest });
      expect(await splitRecords(t)).toBe(1);
      const faulty = failingBucket((op, k) => op === "get" && k.startsWith("splits/"), when);
      const again = await splitBlob(storeOver(t, faulty), digest(blob), serverChunker());
      expect(again.map((c) => c.hash)).toEqual(first.chunkDigests.map((c) => c.hash));
      expect(await stats(t)).toEqual({ blobs: 1 + again.length, bytes: 2 * blob.data.byteLength });
    });
  }
});

describe("SpliceBlob with faults", () => {
  /** A blob of `size` bytes whose server-cut chunks are stored and the blob itself is not. */
  async function chunked(t: Tenant, size: number, seed: number) {
    const blob = await testBlob(size, seed);
    const chunks = await serverCut(blob.data);
    expect(chunks.length).toBeGreaterThan(2);
    await store(t, chunks);
    return { blob, chunks, chunkDigests: chunks.map(digest) };
  }

  /** Two chunks cut by the client, the second over 4 MiB: the splice streams it in its turn rather than reading it ahead whole. */
  async function withLargeChunk(t: Tenant, seed: number) {
    const chunks = [await testBlob(MiB, seed), await testBlob(5 * MiB + 3, seed + 1)];
    for (const c of chunks) {
      const url = `http://kiln/uploads/${crypto.randomUUID()}/blobs/${c.digest.hash}/${c.digest.sizeBytes}`;
      expect((await SELF.fetch(url, { method: "PUT", headers: t.headers, body: c.data })).status).toBe(200);
    }
    const blob = await blobOf(new Uint8Array(await new Blob(chunks.map((c) => c.data)).arrayBuffer()));
    return { blob, chunks, chunkDigests: chunks.map(digest) };
  }

  for (const [kind, make] of [
    ["read ahead whole", (t: Tenant) => chunked(t, 3 * MiB + 1, 21)],
    ["streamed in its turn", (t: Tenant) => withLargeChunk(t, 24)],
  ] as const) {
    it(`a chunk ${kind} whose read breaks off mid-way: UNAVAILABLE naming the chunk, nothing stored; spliced again, the blob is whole`, async () => {
      const t = setup();
      const { blob, chunks, chunkDigests } = await make(t);
      const broken = chunks[1]!.digest.hash;
      const faulty = failingBucket((op, k) => op === "get" && k === `cas/${t.tenant}/${broken}`, "after");
      const err = await errorOf(spliceBlob(storeOver(t, faulty), digest(blob), chunkDigests));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(new RegExp(`reading chunk ${broken}.*injected: R2 get.*nothing was stored`));
      expect(await objectExists(t, blob)).toBe(false);
      expect(await missing(t, [blob])).toEqual(new Set([blob.digest.hash]));

      await t.cas.spliceBlob({ blobDigest: blob.digest, chunkDigests: chunkDigests.map(proto) });
      expect(await readBack(t, blob)).toBe(blob.digest.hash);
    });
  }

  for (const when of ["before", "after"] as When[]) {
    it(`the spliced blob's index record fails ${when} reaching its shard: UNAVAILABLE; spliced again, the blob is there once`, async () => {
      const t = setup();
      const { blob, chunks, chunkDigests } = await chunked(t, 2 * MiB + 9, 22);
      const err = await errorOf(spliceBlob(storeOver(t, failingIndex(["add"], when)), digest(blob), chunkDigests));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/CAS index.*injected: CAS index add failed/);
      // Before: R2 holds it but the index does not, so FindMissing asks for it again.
      expect(await missing(t, [blob])).toEqual(when === "before" ? new Set([blob.digest.hash]) : new Set());

      await t.cas.spliceBlob({ blobDigest: blob.digest, chunkDigests: chunkDigests.map(proto) });
      expect(await readBack(t, blob)).toBe(blob.digest.hash);
      expect(await missing(t, [blob])).toEqual(new Set());
      expect(await stats(t)).toEqual({ blobs: 1 + chunks.length, bytes: 2 * blob.data.byteLength });
    });
  }

  it("a split record that cannot be written does not fail the splice: the blob is stored, and SplitBlob answers the client's chunks", async () => {
    const t = setup();
    const { blob, chunks, chunkDigests } = await chunked(t, 2 * MiB + 11, 23);
    const faulty = failingBucket((op, k) => op === "put" && k.startsWith("splits/"));
    await spliceBlob(storeOver(t, faulty), digest(blob), chunkDigests, serverChunker());
    expect(await readBack(t, blob)).toBe(blob.digest.hash);
    expect(await splitRecords(t)).toBe(0);
    const split = await t.cas.splitBlob({ blobDigest: blob.digest });
    expect(split.chunkDigests.map((c) => c.hash)).toEqual(chunks.map((c) => c.digest.hash));
    expect(await stats(t)).toEqual({ blobs: 1 + chunks.length, bytes: 2 * blob.data.byteLength });
  });
});
