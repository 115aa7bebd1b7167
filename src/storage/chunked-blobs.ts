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
import { notFound } from "../errors.ts";
import { chunkStream, type FastCdc } from "../shared/fastcdc.ts";
import type { BlobStore } from "./blob-store.ts";
import { rechunk } from "./rechunk.ts";
import { splitRecordKey } from "./split-records.ts";
import { blobKey, type BlobDigest } from "./digest.ts";
import { readFailed, readOf } from "./read-failures.ts";
import { hex } from "./sha256-state.ts";
import { uploadBlob, type WriteChunk } from "./upload.ts";
import { upkeep, upkeepFailed } from "./upkeep.ts";

/** New chunks are checked against the index and stored this many bytes at a time. */
const STORE_BATCH_BYTES = 8 * 1024 * 1024;

const splitKey = (store: BlobStore, d: BlobDigest, cdc: FastCdc) => splitRecordKey(store.tenant, d.hash, cdc.params.avgSize, cdc.params.seed);

/** The chunks of a stored blob, in order, each stored in the CAS. NOT_FOUND if the blob is absent. */
export async function splitBlob(store: BlobStore, d: BlobDigest, cdc: FastCdc): Promise<BlobDigest[]> {
  const known = await knownSplit(store, d, cdc);
  if (known) return known;
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
  let storing: Promise<void> = Promise.resolve();
  const flush = async () => {
    const toStore = batch;
    batch = [];
    batchBytes = 0;
    await storing;
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

/** A split recorded earlier whose blob and chunks are all still present (and are touched). */
async function knownSplit(store: BlobStore, d: BlobDigest, cdc: FastCdc): Promise<BlobDigest[] | null> {
  const chunks = await readSplit(store, splitKey(store, d, cdc));
  if (!chunks) return null;
  const missing = await store.index.missing([d, ...chunks], true);
  if (missing.some((m) => m.hash === d.hash && m.size === d.size)) throw notFound(`blob ${blobKey(d)} not found`);
  return missing.length === 0 ? chunks : null;
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

async function storeNew(store: BlobStore, blobs: { d: BlobDigest; data: Uint8Array }[]): Promise<void> {
  if (blobs.length === 0) return;
  const missing = new Set((await store.index.missing(blobs.map((b) => b.d), true)).map(blobKey));
  const errors = await store.writeMany(blobs.filter((b) => missing.has(blobKey(b.d))));
  const failed = errors.find((e) => e !== undefined);
  if (failed) throw failed;
}

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
