// The storage half of SplitBlob and SpliceBlob. Both stream: a split reads the blob once from R2,
// cuts it with FastCDC and stores each new chunk as a CAS blob (holding at most a few chunks); a
// splice streams the chunks' concatenation into one verified write (uploadBlob: a single R2 put
// that R2 checks against the SHA-256, or a multipart upload hashed on the way for large blobs),
// so a spliced blob that does not hash to its digest never lands.
//
// A split's chunk list is kept beside the CAS (splits/{tenant}/{hash}) so splitting the same blob
// again costs one read of the list and one existence check, not a read of the whole blob; a list
// whose chunks are no longer all present is recomputed. The list only saves work: one that cannot
// be written or read fails nothing. It goes when its blob is evicted (split-records.ts).
//
// A read that breaks off (of the blob being split, of a chunk being spliced) is UNAVAILABLE with
// what was being read: the client retries, and a splice has stored nothing.
//
// A split may be given a budget of subrequests (SplitBudget): every R2 and CAS index call is one on
// a deployed Worker, which allows a fixed number per request, and a split that ran out part-way
// would fail UNAVAILABLE, which clients retry, to fail the same way again.
import { notFound } from "../errors.ts";
import { chunkStream, type FastCdc } from "../shared/fastcdc.ts";
import type { BlobStore } from "./blob-store.ts";
import { rechunk } from "./rechunk.ts";
import { splitRecordKey } from "./split-records.ts";
import { blobKey, type BlobDigest } from "./digest.ts";
import { readFailed, readOf } from "./read-failures.ts";
import { hex } from "./sha256-state.ts";
import { isSmall } from "./small-blobs.ts";
import { uploadBlob, type WriteChunk } from "./upload.ts";
import { upkeep, upkeepFailed } from "./upkeep.ts";

/** New chunks are checked against the index and stored this many bytes at a time. */
export const STORE_BATCH_BYTES = 8 * 1024 * 1024;

/**
 * The subrequests a split may make, and how it is refused: before the blob is read when `estimate`
 * (what cutting it afresh is expected to cost) would pass `max`; while cutting, before storing a
 * batch of chunks whose calls, added to those counted so far, could pass it. Chunks stored before
 * that are ordinary CAS blobs; the split is recorded only once all are stored.
 */
export interface SplitBudget {
  max: number;
  estimate: number;
  /** The error refusing the split: `cost` is the estimate, or (`counted`) the calls made and the next batch's. */
  refuse(cost: number, counted: boolean): Error;
}

const UNLIMITED: SplitBudget = { max: Infinity, estimate: 0, refuse: () => new Error("unreachable") };

/**
 * Calls a split makes before its batches: the index's layout check (once per isolate), the touch
 * and the read (an index call, then R2, for a blob of 4 KiB or less).
 */
const OPENING_CALLS = 4;
/** The split record's put, made last, kept room for throughout. */
const RECORD_CALLS = 1;

const splitKey = (store: BlobStore, d: BlobDigest, cdc: FastCdc) => splitRecordKey(store.tenant, d.hash, cdc.params.avgSize, cdc.params.seed);

/**
 * The chunks of a stored blob, in order, each stored in the CAS. NOT_FOUND if the blob is absent.
 * A recorded split is answered whatever the budget; a blob cut afresh is held to it.
 */
export async function splitBlob(store: BlobStore, d: BlobDigest, cdc: FastCdc, budget: SplitBudget = UNLIMITED): Promise<BlobDigest[]> {
  const known = await knownSplit(store, d, cdc);
  if (known.chunks) return known.chunks;
  if (known.calls + budget.estimate > budget.max) {
    // An absent blob is NOT_FOUND, as for any split, not a split refused.
    if ((await store.index.missing([d], true)).length > 0) throw notFound(`blob ${blobKey(d)} not found`);
    throw budget.refuse(known.calls + budget.estimate, false);
  }
  let calls = known.calls + OPENING_CALLS;
  // REAPI: a SplitBlob extends the blob's lifetime; the touch runs beside the opening read.
  const touch = store.index.missing([d], true);
  touch.catch(() => {}); // awaited below, once the read is open
  const blob = await store.read(d);
  try {
    await touch;
  } catch (e) {
    await blob.body.cancel().catch(() => {});
    throw e;
  }
  const chunks: BlobDigest[] = [];
  let batch: { d: BlobDigest; data: Uint8Array }[] = [];
  let batchBytes = 0;
  // One batch is stored while the next is cut: the R2 writes overlap the chunking.
  let storing: Promise<number> = Promise.resolve(0);
  const flush = async () => {
    const toStore = batch;
    batch = [];
    batchBytes = 0;
    calls += await storing;
    storing = Promise.resolve(0);
    // Nothing is in flight here: refusing leaves no store running and no promise unawaited.
    const next = calls + storeCalls(store, toStore.map((b) => b.d), toStore.map((b) => b.d)) + RECORD_CALLS;
    if (next > budget.max) throw budget.refuse(next, true);
    storing = storeNew(store, toStore);
    storing.catch(() => {}); // awaited by the next flush or at the end; never left unhandled
  };
  // Read from R2 a MiB at a time (rechunk), not in the store's small chunks.
  const reading = readOf(`blob ${d.hash}`, "retry", () => rechunk(blob.body, 1024 * 1024, blob.length));
  for await (const data of chunkStream(reading, cdc)) {
    const c = { hash: hex(new Uint8Array(await crypto.subtle.digest("SHA-256", data))), size: data.byteLength };
    chunks.push(c);
    batch.push({ d: c, data });
    batchBytes += data.byteLength;
    if (batchBytes >= STORE_BATCH_BYTES) await flush();
  }
  await flush();
  await storing;
  await recordSplit(store, d, cdc, chunks);
  return chunks;
}

/** Keeps a blob's split for the next SplitBlob; a failure only costs that one a read of the blob. */
async function recordSplit(store: BlobStore, d: BlobDigest, cdc: FastCdc, chunks: readonly BlobDigest[]): Promise<void> {
  const put = store.env.CAS.put(splitKey(store, d, cdc), JSON.stringify(chunks.map((c) => [c.hash, c.size])));
  await upkeep(put, "split_not_recorded", { tenant: store.tenant, blob: blobKey(d) });
}

/** Sizes FastCDC with these parameters can cut (every chunk but the last within min..max). */
const fitsChunker = (chunks: readonly BlobDigest[], cdc: FastCdc) =>
  chunks.every((c, i) => c.size <= cdc.params.maxSize && (i === chunks.length - 1 || c.size >= cdc.params.minSize));

/**
 * A split recorded earlier whose blob and chunks are all still present (and are touched), or null;
 * `calls`: the subrequests spent finding out (the record's read, and a lookup per shard asked).
 */
async function knownSplit(store: BlobStore, d: BlobDigest, cdc: FastCdc): Promise<{ chunks: BlobDigest[] | null; calls: number }> {
  const chunks = await readSplit(store, splitKey(store, d, cdc));
  if (!chunks) return { chunks: null, calls: 1 };
  const missing = await store.index.missing([d, ...chunks], true);
  if (missing.some((m) => m.hash === d.hash && m.size === d.size)) throw notFound(`blob ${blobKey(d)} not found`);
  return { chunks: missing.length === 0 ? chunks : null, calls: 1 + shardsOf(store, [d, ...chunks]) };
}

/** A recorded split; null when there is none, or it cannot be read (the split is then cut afresh). */
async function readSplit(store: BlobStore, key: string): Promise<BlobDigest[] | null> {
  try {
    const obj = await store.env.CAS.get(key);
    if (!obj) return null;
    return ((await obj.json()) as [string, number][]).map(([hash, size]) => ({ hash, size }));
  } catch (e) {
    upkeepFailed("split_record_unreadable", { key }, e);
    return null;
  }
}

/** Stores those of `blobs` the CAS lacks; resolves with the subrequests that took (storeCalls). */
async function storeNew(store: BlobStore, blobs: { d: BlobDigest; data: Uint8Array }[]): Promise<number> {
  if (blobs.length === 0) return 0;
  const asked = blobs.map((b) => b.d);
  const missing = new Set((await store.index.missing(asked, true)).map(blobKey));
  const toWrite = blobs.filter((b) => missing.has(blobKey(b.d)));
  const errors = await store.writeMany(toWrite);
  const failed = errors.find((e) => e !== undefined);
  if (failed) throw failed;
  return storeCalls(store, asked, toWrite.map((b) => b.d));
}

/**
 * The subrequests storeNew makes asking the index about `asked` and writing `written`, at most (a
 * chunk this isolate knows is present is not asked about): a lookup per shard asked, an R2 put per
 * chunk over 4 KiB, and an index add per shard written to (for the large chunks and the small ones).
 */
function storeCalls(store: BlobStore, asked: readonly BlobDigest[], written: readonly BlobDigest[]): number {
  if (asked.length === 0) return 0;
  const large = written.filter((d) => !isSmall(d));
  const small = written.filter((d) => isSmall(d));
  return shardsOf(store, asked) + large.length + shardsOf(store, large) + shardsOf(store, small);
}

const shardsOf = (store: BlobStore, digests: readonly BlobDigest[]) => new Set(digests.map((d) => store.index.shardKeyOf(d.hash))).size;

/**
 * Stores `blob` as the concatenation of `chunks` (all in the CAS, sizes adding up to blob.size),
 * verified against blob.hash; nothing is stored on a mismatch. A chunk that vanished meanwhile is
 * NOT_FOUND. Chunks the client says it cut with the server's FastCDC (`cutWith`) are recorded as
 * the blob's split, so a SplitBlob of it (a bridge reading it back) need not read the blob.
 */
export async function spliceBlob(store: BlobStore, blob: BlobDigest, chunks: readonly BlobDigest[], cutWith?: FastCdc): Promise<void> {
  await uploadBlob(store, `splice-${crypto.randomUUID()}`, blob, 0, concatenation(store, chunks));
  if (cutWith && fitsChunker(chunks, cutWith)) await recordSplit(store, blob, cutWith, chunks);
}

const NOTHING_STORED = "nothing was stored; retry";

/** Chunks read ahead of the one being written, whole, when they are at most SPLICE_BUFFERED_CHUNK. */
const SPLICE_READ_AHEAD = 4;
const SPLICE_BUFFERED_CHUNK = 4 * 1024 * 1024;

async function* concatenation(store: BlobStore, chunks: readonly BlobDigest[]): AsyncGenerator<WriteChunk> {
  // Chunks are usually small (FastCDC: 2 MiB at most): reading a few whole ones ahead keeps R2's
  // latency off the write. A larger chunk (a client may cut any way) is streamed in its turn.
  const ahead: { d: BlobDigest; data?: Promise<Uint8Array> }[] = [];
  let next = 0;
  const fill = () => {
    while (ahead.length < SPLICE_READ_AHEAD && next < chunks.length) {
      const d = chunks[next++]!;
      if (d.size > SPLICE_BUFFERED_CHUNK) {
        ahead.push({ d });
        continue;
      }
      const data = store
        .read(d)
        .then(async (r) => new Uint8Array(await new Response(r.body).arrayBuffer()))
        .catch((e: unknown) => {
          throw readFailed(`chunk ${d.hash}`, NOTHING_STORED, e);
        });
      data.catch(() => {}); // awaited in turn below
      ahead.push({ d, data });
    }
  };
  let offset = 0;
  fill();
  while (ahead.length) {
    const { d, data } = ahead.shift()!;
    fill();
    const pieces = data ? [await data] : readOf(`chunk ${d.hash}`, NOTHING_STORED, async () => (await store.read(d)).body);
    for await (const piece of pieces) {
      yield { offset, data: piece, finish: false };
      offset += piece.byteLength;
    }
  }
  yield { offset, data: new Uint8Array(), finish: true };
}
