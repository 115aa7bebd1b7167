// SplitBlob and SpliceBlob (src/services/cas-chunking.ts) on Connect, gRPC-web and REST, with the
// Capabilities that announce them and max_cas_blob_size_bytes.
import { SELF, env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  Capabilities,
  ChunkingFunction_Value,
  ContentAddressableStorage,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import type { Env } from "../../src/env.ts";
import { serverChunker } from "../../src/services/cas-chunking.ts";
import { splitCost } from "../../src/services/limits.ts";
import { FastCdc, chunkStream, fastCdc2020Params } from "../../src/shared/fastcdc.ts";
import { aroundBucket, failingIndex, withBinding } from "./fault-injection.ts";
import { connectClient, digestOf, errorOf, grpcWebClient, pseudoRandom, sha256Hex, uniqueInstance, upload } from "./helpers.ts";

const cas = connectClient(ContentAddressableStorage);
const MiB = 1024 * 1024;
type Digest = { hash: string; sizeBytes: bigint };

async function put(instanceName: string, data: Uint8Array): Promise<Digest> {
  const d = await digestOf(data);
  const prefix = instanceName ? `${instanceName}/` : "";
  const r = await SELF.fetch(`http://kiln/${prefix}uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, { method: "PUT", body: data });
  expect(r.status).toBe(200);
  return d;
}

async function get(instanceName: string, d: Digest): Promise<Uint8Array | null> {
  const r = await SELF.fetch(`http://kiln/${instanceName}/blobs/${d.hash}/${d.sizeBytes}`);
  if (r.status === 404) return null;
  expect(r.status).toBe(200);
  return new Uint8Array(await r.arrayBuffer());
}

async function concat(instanceName: string, chunks: Digest[]): Promise<Uint8Array> {
  const parts = await Promise.all(chunks.map((c) => get(instanceName, c)));
  const out = new Uint8Array(parts.reduce((n, p) => n + p!.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p!, off);
    off += p!.length;
  }
  return out;
}

async function splitRecorded(hash: string): Promise<boolean> {
  return (await env.CAS.list({ prefix: "splits/" })).objects.some((o) => o.key.includes(hash));
}

async function deleteSplitRecords() {
  for (const o of (await env.CAS.list({ prefix: "splits/" })).objects) await env.CAS.delete(o.key);
}

describe("Capabilities for chunking", () => {
  it("advertises split, splice, FastCDC 2020 at 512 KiB with seed 0, and the one-request blob limit", async () => {
    const caps = (await grpcWebClient(Capabilities).getCapabilities({})).cacheCapabilities!;
    expect(caps.splitBlobSupport).toBe(true);
    expect(caps.spliceBlobSupport).toBe(true);
    expect(caps.fastCdc2020Params).toMatchObject({ avgChunkSizeBytes: 524288n, seed: 0 });
    expect(caps.repMaxCdcParams).toBeUndefined();
    // MAX_REQUEST_BODY_BYTES defaults to 100 MB (Cloudflare Free/Pro) less 1 MiB for framing.
    expect(caps.maxCasBlobSizeBytes).toBe(BigInt(100_000_000 - MiB));
  });

  it("takes CHUNK_AVG_SIZE_BYTES only as a power of two from 1 KiB to 1 MiB (what clients can cut at)", async () => {
    const saved = env.CHUNK_AVG_SIZE_BYTES;
    try {
      for (const [set, advertised] of [["65536", 65536n], ["786432", 524288n], ["2097152", 524288n], ["512", 524288n], ["x", 524288n]] as const) {
        env.CHUNK_AVG_SIZE_BYTES = set;
        const caps = (await grpcWebClient(Capabilities).getCapabilities({})).cacheCapabilities!;
        expect(caps.fastCdc2020Params?.avgChunkSizeBytes, set).toBe(advertised);
      }
    } finally {
      env.CHUNK_AVG_SIZE_BYTES = saved;
    }
  });

  it("refuses an HTTP upload over max_cas_blob_size_bytes before reading it, naming SpliceBlob", async () => {
    const hash = await sha256Hex("anything");
    const size = 100_000_000;
    const r = await SELF.fetch(`http://kiln/uploads/${crypto.randomUUID()}/blobs/${hash}/${size}`, { method: "PUT", body: "x" });
    expect(r.status).toBe(400);
    expect(await r.text()).toMatch(/max_cas_blob_size_bytes.*SpliceBlob/);
  });
});

describe("SplitBlob and SpliceBlob", () => {
  it("round trip: chunks spliced into a blob split back into the same chunks (Connect, gRPC-web, REST)", async () => {
    const inst = uniqueInstance("split");
    const data = pseudoRandom(5 * MiB + 333, (Math.random() * 2 ** 31) | 0);
    const d = await digestOf(data);
    // The client cuts with the advertised FastCDC 2020 parameters and uploads only the chunks.
    const cdc = new FastCdc(fastCdc2020Params(512 * 1024));
    const chunks: Digest[] = [];
    for await (const c of chunkStream([data], cdc)) chunks.push(await put(inst, c));
    expect(chunks.length).toBeGreaterThan(3);
    expect(await get(inst, d)).toBeNull();
    const res = await grpcWebClient(ContentAddressableStorage).spliceBlob({
      instanceName: inst,
      blobDigest: d,
      chunkDigests: chunks,
      chunkingFunction: ChunkingFunction_Value.FAST_CDC_2020,
    });
    expect(res.blobDigest).toMatchObject(d);
    expect(await sha256Hex((await get(inst, d))!)).toBe(d.hash);

    // The splice was recorded as the blob's split; without the record, the blob is cut afresh, the same way.
    expect(await splitRecorded(d.hash)).toBe(true);
    for (const fresh of [false, true]) {
      if (fresh) await deleteSplitRecords();
      const split = await cas.splitBlob({ instanceName: inst, blobDigest: d, chunkingFunction: ChunkingFunction_Value.REP_MAX_CDC });
      expect(split.chunkingFunction).toBe(ChunkingFunction_Value.FAST_CDC_2020);
      expect(split.chunkDigests.map((c) => ({ hash: c.hash, sizeBytes: c.sizeBytes }))).toEqual(chunks);
    }

    // REST: the routes come from the google.api.http annotations.
    const rest = await SELF.fetch(`http://kiln/v2/${inst}/blobs/${d.hash}/${d.sizeBytes}:splitBlob`);
    expect(rest.status).toBe(200);
    const body = (await rest.json()) as { chunkDigests: { hash: string; sizeBytes: string }[]; chunkingFunction: string };
    expect(body.chunkDigests.map((c) => c.hash)).toEqual(chunks.map((c) => c.hash));
    expect(body.chunkingFunction).toBe("FAST_CDC_2020");
    const spliced = await SELF.fetch(`http://kiln/v2/${inst}/blobs:spliceBlob`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ blobDigest: { hash: d.hash, sizeBytes: String(d.sizeBytes) }, chunkDigests: body.chunkDigests }),
    });
    expect(spliced.status).toBe(200);
  });

  it("splits a multi-MiB blob into chunks that concatenate to it, and splits it again identically", async () => {
    const inst = uniqueInstance("resplit");
    const data = pseudoRandom(12 * MiB + 5, 42);
    const d = await put(inst, data);
    const first = await cas.splitBlob({ instanceName: inst, blobDigest: d });
    expect(first.chunkDigests.length).toBeGreaterThan(10);
    for (const c of first.chunkDigests.slice(0, -1)) {
      expect(Number(c.sizeBytes)).toBeGreaterThanOrEqual(128 * 1024);
      expect(Number(c.sizeBytes)).toBeLessThanOrEqual(2 * MiB);
    }
    expect(await sha256Hex(await concat(inst, first.chunkDigests))).toBe(d.hash);
    const again = await cas.splitBlob({ instanceName: inst, blobDigest: d });
    expect(again.chunkDigests).toEqual(first.chunkDigests);
    // Without the recorded split, the blob is cut afresh: the same chunks.
    await deleteSplitRecords();
    const fresh = await cas.splitBlob({ instanceName: inst, blobDigest: d });
    expect(fresh.chunkDigests).toEqual(first.chunkDigests);
  });

  it("splits a small blob into itself, the empty blob into nothing, and an absent blob is NOT_FOUND", async () => {
    const inst = uniqueInstance("small");
    const d = await put(inst, new TextEncoder().encode("small blob"));
    expect((await cas.splitBlob({ instanceName: inst, blobDigest: d })).chunkDigests).toEqual([expect.objectContaining(d)]);
    const empty = await digestOf(new Uint8Array());
    expect((await cas.splitBlob({ instanceName: inst, blobDigest: empty })).chunkDigests).toEqual([]);
    const absent = await digestOf("never stored " + crypto.randomUUID());
    expect((await errorOf(cas.splitBlob({ instanceName: inst, blobDigest: absent }))).code).toBe(Code.NotFound);
  });

  it("a splice with missing chunks is NOT_FOUND with a MISSING violation per chunk, and stores nothing", async () => {
    const inst = uniqueInstance("missing");
    const a = pseudoRandom(300_000, 51);
    const b = pseudoRandom(200_000, 52);
    const c = pseudoRandom(100_000, 53);
    const whole = new Uint8Array([...a, ...b, ...c]);
    const d = await digestOf(whole);
    const da = await put(inst, a);
    const db = await digestOf(b);
    const dc = await digestOf(c);
    const err = await errorOf(cas.spliceBlob({ instanceName: inst, blobDigest: d, chunkDigests: [da, db, dc] }));
    expect(err.code).toBe(Code.NotFound);
    const violations = err.findDetails(PreconditionFailureSchema).flatMap((f) => f.violations);
    expect(violations.map((v) => [v.type, v.subject])).toEqual([
      ["MISSING", `blobs/${db.hash}/${db.sizeBytes}`],
      ["MISSING", `blobs/${dc.hash}/${dc.sizeBytes}`],
    ]);
    expect(await get(inst, d)).toBeNull();
  });

  it("a splice whose chunks do not hash to the digest is INVALID_ARGUMENT and stores nothing", async () => {
    const inst = uniqueInstance("mismatch");
    const a = pseudoRandom(400_000, 61);
    const b = pseudoRandom(400_000, 62);
    const [da, db] = [await put(inst, a), await put(inst, b)];
    // The right size, the hash of the chunks in the other order.
    const wrong = await digestOf(new Uint8Array([...b, ...a]));
    const err = await errorOf(cas.spliceBlob({ instanceName: inst, blobDigest: wrong, chunkDigests: [da, db] }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(/nothing was stored/);
    expect(await get(inst, wrong)).toBeNull();
    expect((await cas.findMissingBlobs({ instanceName: inst, blobDigests: [wrong] })).missingBlobDigests).toHaveLength(1);
    // Sizes that do not add up are refused before anything is read.
    const short = await errorOf(cas.spliceBlob({ instanceName: inst, blobDigest: { ...wrong, sizeBytes: 5n }, chunkDigests: [da, db] }));
    expect(short.code).toBe(Code.InvalidArgument);
    expect(short.rawMessage).toMatch(/total 800000 bytes/);
    // The right order splices; chunks not cut by FastCDC are not taken for the blob's split.
    const right = await digestOf(new Uint8Array([...a, ...b]));
    await cas.spliceBlob({ instanceName: inst, blobDigest: right, chunkDigests: [da, db] });
    expect(await sha256Hex((await get(inst, right))!)).toBe(right.hash);
    expect(await splitRecorded(right.hash)).toBe(false);
    const split = await cas.splitBlob({ instanceName: inst, blobDigest: right });
    expect(split.chunkDigests.map((c) => c.hash)).not.toEqual([da.hash, db.hash]);
    expect(await sha256Hex(await concat(inst, split.chunkDigests))).toBe(right.hash);
  });

  it("splices a blob above the resumable threshold through a verified multipart upload, from chunks of any size", async () => {
    const inst = uniqueInstance("large");
    // RESUMABLE_UPLOAD_ABOVE_BYTES is 8 MiB in these tests; a 5 MiB chunk is streamed, not read ahead whole.
    const parts = [pseudoRandom(3 * MiB, 71), pseudoRandom(5 * MiB + 17, 72), pseudoRandom(1 * MiB, 73)];
    const chunks = [];
    for (const p of parts) chunks.push(await put(inst, p));
    const whole = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) whole.set(p, (off += p.length) - p.length);
    const d = await digestOf(whole);
    const bad = await digestOf(whole.map((x, i) => (i === 5 ? x ^ 1 : x)));
    expect((await errorOf(cas.spliceBlob({ instanceName: inst, blobDigest: bad, chunkDigests: chunks }))).code).toBe(Code.InvalidArgument);
    expect(await get(inst, bad)).toBeNull();
    await cas.spliceBlob({ instanceName: inst, blobDigest: d, chunkDigests: chunks });
    expect(await sha256Hex((await get(inst, d))!)).toBe(d.hash);
  });

  it("refuses a splice without blob_digest, with an unknown chunking_function or too many chunks, and a split of another digest function", async () => {
    const d = await digestOf("x");
    expect((await errorOf(cas.spliceBlob({ chunkDigests: [d] }))).code).toBe(Code.InvalidArgument);
    expect((await errorOf(cas.spliceBlob({ blobDigest: d, chunkDigests: [d], chunkingFunction: 7 as ChunkingFunction_Value }))).code).toBe(Code.InvalidArgument);
    const many = await errorOf(cas.spliceBlob({ blobDigest: { ...d, sizeBytes: 10_001n }, chunkDigests: Array(10_001).fill(d) }));
    expect(many.code).toBe(Code.InvalidArgument);
    expect(many.rawMessage).toMatch(/MAX_SPLICE_CHUNKS/);
    expect((await errorOf(cas.splitBlob({ blobDigest: d, digestFunction: 2 }))).code).toBe(Code.InvalidArgument);
  });

  it("refuses, before reading anything, a splice that would pass MAX_SPLICE_SUBREQUESTS; within it, splices", async () => {
    const inst = uniqueInstance("budget");
    const parts = Array.from({ length: 30 }, (_, i) => `part ${i} ${crypto.randomUUID()}`);
    const chunks = await Promise.all(parts.map((p) => upload(p, inst)));
    const d = await digestOf(parts.join(""));
    const saved = env.MAX_SPLICE_SUBREQUESTS;
    try {
      // 30 chunk reads, 2 x 16 index lookups and a put: 64.
      env.MAX_SPLICE_SUBREQUESTS = "60";
      const e = await errorOf(cas.spliceBlob({ instanceName: inst, blobDigest: d, chunkDigests: chunks }));
      expect([e.code, e.rawMessage]).toEqual([Code.InvalidArgument, expect.stringMatching(/makes up to 64 subrequests, over MAX_SPLICE_SUBREQUESTS \(60\)/)]);
      expect(await get(inst, d)).toBeNull();
      env.MAX_SPLICE_SUBREQUESTS = "64";
      await cas.spliceBlob({ instanceName: inst, blobDigest: d, chunkDigests: chunks });
      expect(await sha256Hex((await get(inst, d))!)).toBe(d.hash);
    } finally {
      env.MAX_SPLICE_SUBREQUESTS = saved;
    }
  });
});

/** Runs `fn` with MAX_SPLIT_SUBREQUESTS set to `budget`. */
async function withSplitBudget<T>(budget: string, fn: () => Promise<T>): Promise<T> {
  const saved = env.MAX_SPLIT_SUBREQUESTS;
  env.MAX_SPLIT_SUBREQUESTS = budget;
  try {
    return await fn();
  } finally {
    env.MAX_SPLIT_SUBREQUESTS = saved;
  }
}

/** The subrequests the worker makes while `fn` runs: R2 calls ("op key") and CAS index calls (the method). */
async function callsDuring<T>(fn: () => Promise<T>): Promise<{ result: T; r2: string[]; index: string[] }> {
  const r2: string[] = [];
  const index: string[] = [];
  const bucket = { ...env, CAS: aroundBucket(env.CAS, (op, key, call) => (r2.push(`${op} ${key}`), call())) } as unknown as Env;
  const shards = failingIndex((method) => (index.push(method), false), "before");
  const result = await withBinding("CAS", bucket, () => withBinding("CAS_INDEX", shards, fn));
  return { result, r2, index };
}

/** The blob's chunks as the server cuts them. */
async function serverCut(data: Uint8Array): Promise<Digest[]> {
  const out: Digest[] = [];
  for await (const c of chunkStream([data], serverChunker())) out.push(await digestOf(c));
  return out;
}

const missingOf = async (inst: string, ds: Digest[]) => (await cas.findMissingBlobs({ instanceName: inst, blobDigests: ds })).missingBlobDigests.length;

/**
 * `n` chunks' worth of bytes that FastCDC (512 KiB average) cuts at its minimum size, a quarter of
 * the average, throughout: four times the chunks an estimate from the size counts. Each chunk is
 * 128 KiB of random bytes and 24 of [27, 131], a pair on which the Gear hash matches the mask
 * FastCDC uses below the average (found by trying byte pairs); the hash starts at the minimum size.
 */
function minimumSizeChunks(n: number, seed: number): Uint8Array {
  const min = 128 * 1024;
  const len = min + 24;
  const out = new Uint8Array(n * len);
  for (let i = 0; i < n; i++) {
    out.set(pseudoRandom(min, seed + i), i * len);
    out[i * len] = 27; // also the last byte the previous chunk's cut hashes
    for (let j = min; j < len; j += 2) out.set([27, 131], i * len + j);
  }
  return out;
}

describe("SplitBlob's subrequest budget (MAX_SPLIT_SUBREQUESTS)", () => {
  it("refuses, before reading the blob, a split expected to pass it: FAILED_PRECONDITION naming the budget, the estimate, the size and ByteStream.Read; at the estimate, splits", async () => {
    const inst = uniqueInstance("split-budget");
    const data = pseudoRandom(3 * MiB + 5, 81);
    const d = await put(inst, data);
    const chunks = await serverCut(data);
    // The record's read, then 7 chunks (3 MiB + 5 at 512 KiB), 2 x 5.8 index calls for the batch's shards, 5 more.
    const { result: err, ...calls } = await callsDuring(() => withSplitBudget("24", () => errorOf(cas.splitBlob({ instanceName: inst, blobDigest: d }))));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(new RegExp(`blob ${d.hash}/3145733 \\(3145733 bytes\\).*makes about 25 subrequests, over MAX_SPLIT_SUBREQUESTS \\(24\\)`));
    expect(err.rawMessage).toMatch(/read it whole with ByteStream\.Read.*nothing was read or stored/);
    // Nothing read but the absent split record and the blob's presence in the index, nothing stored.
    expect(calls).toEqual({ r2: [expect.stringMatching(/^get splits\//)], index: ["present"] });
    expect(await missingOf(inst, chunks)).toBe(chunks.length);
    expect(await splitRecorded(d.hash)).toBe(false);

    // 25 also suffices for the count while cutting: this (seeded) blob's 7 chunks fall in 6 of the 16 shards.
    const split = await withSplitBudget("25", () => cas.splitBlob({ instanceName: inst, blobDigest: d }));
    expect(split.chunkDigests.map((c) => c.hash)).toEqual(chunks.map((c) => c.hash));
    expect(await missingOf(inst, chunks)).toBe(0);
    expect(await splitRecorded(d.hash)).toBe(true);
  });

  it("answers NOT_FOUND for an absent blob, whatever the budget", async () => {
    const d = await digestOf(pseudoRandom(3 * MiB + 5, 84));
    const err = await withSplitBudget("1", () => errorOf(cas.splitBlob({ instanceName: uniqueInstance("split-budget-absent"), blobDigest: d })));
    expect(err.code).toBe(Code.NotFound);
  });

  it("answers a recorded split under any budget; the same blob cut afresh is refused", async () => {
    const inst = uniqueInstance("split-budget-known");
    const d = await put(inst, pseudoRandom(3 * MiB + 5, 82));
    const first = await cas.splitBlob({ instanceName: inst, blobDigest: d });
    const again = await withSplitBudget("1", () => cas.splitBlob({ instanceName: inst, blobDigest: d }));
    expect(again.chunkDigests).toEqual(first.chunkDigests);
    await deleteSplitRecords();
    const err = await withSplitBudget("1", () => errorOf(cas.splitBlob({ instanceName: inst, blobDigest: d })));
    expect([err.code, err.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/over MAX_SPLIT_SUBREQUESTS \(1\)/)]);
  });

  it("stops a split whose chunks outnumber the estimate before the batch that would pass the budget: the calls made stay within it, whole chunks are stored, no split is recorded", async () => {
    const inst = uniqueInstance("split-budget-count");
    const data = minimumSizeChunks(128, 83);
    const d = await put(inst, data);
    const chunks = await serverCut(data);
    // 128 chunks where the estimate counts 33: two batches of 64, each up to 16 lookups, 64 puts and 16 adds.
    expect(chunks.length).toBe(128);
    expect(1 + splitCost(data.length, 512 * 1024, 16, 8 * MiB)).toBe(83);
    const { result: err, ...calls } = await callsDuring(() => withSplitBudget("120", () => errorOf(cas.splitBlob({ instanceName: inst, blobDigest: d }))));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/would make \d+ subrequests with its next batch of chunks, over MAX_SPLIT_SUBREQUESTS \(120\).*ByteStream\.Read.*no split was recorded/);
    // More calls than the estimate were made (the first batch), never more than the budget.
    const made = calls.r2.length + calls.index.length;
    expect(made).toBeGreaterThan(83);
    expect(made).toBeLessThanOrEqual(120);
    expect(calls.r2.filter((c) => c.startsWith("put ")).length).toBe(64);
    // The first batch's chunks are stored, whole; the second's are not, nor is the split.
    expect(await missingOf(inst, chunks.slice(0, 64))).toBe(0);
    expect(await missingOf(inst, chunks.slice(64))).toBe(64);
    expect(await splitRecorded(d.hash)).toBe(false);
    // Within the default budget the split completes.
    const split = await cas.splitBlob({ instanceName: inst, blobDigest: d });
    expect(split.chunkDigests.map((c) => c.hash)).toEqual(chunks.map((c) => c.hash));
  });

  it("splitCost: chunks by the average size, two index calls per shard a batch is expected to touch, five more", () => {
    // One chunk: one shard looked up and added to.
    expect(splitCost(10, 512 * 1024, 16, 8 * MiB)).toBe(5 + 1 + 2);
    // 1 GiB: 2,048 chunks in 128 batches of 16; with one shard each batch touches it.
    expect(splitCost(1024 * MiB, 512 * 1024, 1, 8 * MiB)).toBe(5 + 2048 + 2 * 128);
    // With 16, a batch of 16 chunks touches 16 x (1 - (15/16)^16) = 10.30 of them on average.
    expect(splitCost(1024 * MiB, 512 * 1024, 16, 8 * MiB)).toBe(Math.ceil(5 + 2048 + 2 * 128 * 16 * (1 - (15 / 16) ** 16)));
    expect(splitCost(1024 * MiB, 512 * 1024, 16, 8 * MiB)).toBe(4691);
    // A part batch counts its own chunks: 7 chunks touch 5.82 shards.
    expect(splitCost(3 * MiB + 5, 512 * 1024, 16, 8 * MiB)).toBe(24);
    // At 1 KiB, a batch of 8,192 chunks touches every shard.
    expect(splitCost(1024 * MiB, 1024, 16, 8 * MiB)).toBe(5 + 1024 * 1024 + 2 * 128 * 16);
    // The README's "about 1.9 GiB" at the defaults.
    expect(splitCost(1965 * MiB, 512 * 1024, 16, 8 * MiB)).toBeLessThanOrEqual(9000);
    expect(splitCost(1966 * MiB, 512 * 1024, 16, 8 * MiB)).toBeGreaterThan(9000);
  });
});
