// Request limits, in one place so the README, the errors and the tests name the same numbers.
// Each over-limit request is INVALID_ARGUMENT with a message naming the limit, never a 500 (a
// SplitBlob over its budget is FAILED_PRECONDITION: see splitOverBudget).
// (Search-query limits live with the query language: src/resultstore/search-query.ts.)
import { kilnEnv, maxUploadBlobSize } from "../config.ts";
import type { BlobDigest } from "../storage/digest.ts";
import { Code, ConnectError, invalidArgument } from "../errors.ts";

/** UploadBatch: the proto recommends batches of 10 MiB; 12 MiB leaves room for a client's rounding. */
export const RESULTSTORE_UPLOAD_MAX = 12 * 1024 * 1024;

/**
 * Entries in one BatchUpdateBlobs / BatchReadBlobs. remote-apis-sdks clients (reclient, bb-clientd's
 * peers) send up to 4,000, and Capabilities has no field to tell them less. Subrequests are bound
 * by bytes, not entries: blobs of up to SMALL_BLOB_MAX_BYTES are written and read in one index call
 * per shard, so only larger ones cost an R2 call each, at most ~1,000 within
 * max_batch_total_size_bytes (and at most 1,000 small ones the index cannot give bytes for).
 * Size-0 entries weigh nothing against that cap, so without this one a request could carry
 * ~100,000 of them. (Bazel sends no batches: it uses ByteStream.)
 */
export const MAX_BATCH_ENTRIES = 10_000;

/**
 * Chunks in one SpliceBlob: each is one R2 read (a subrequest). At the default 512 KiB average
 * that is a blob of about 5 GB, R2's largest single object.
 */
export const MAX_SPLICE_CHUNKS = 10_000;

/**
 * INVALID_ARGUMENT for an upload (ByteStream.Write, HTTP PUT) of a blob over max_cas_blob_size_bytes;
 * a `compressed` one (zstd bytes on the wire) is held to checkCompressedUploadSize instead.
 */
export function checkUploadSize(d: BlobDigest, compressed = false): void {
  if (compressed) return checkCompressedUploadSize(d);
  const max = maxUploadBlobSize();
  if (max > 0 && d.size > max) {
    throw invalidArgument(
      `blob ${d.hash}/${d.size} is over max_cas_blob_size_bytes (${max}): one request cannot carry it past the edge's body cap; ` +
        "upload it as chunks (BatchUpdateBlobs or ByteStream) and assemble it with SpliceBlob",
    );
  }
}

/**
 * A compressed-blobs upload carries compressed bytes, which the edge caps; its blob may be larger
 * than max_cas_blob_size_bytes, up to this many times it. A bound all the same: a few kilobytes of
 * zstd can declare a blob of any size, which the worker would inflate, hash and store.
 */
export const MAX_COMPRESSION_RATIO = 16;

/** INVALID_ARGUMENT for a compressed upload whose blob is over MAX_COMPRESSION_RATIO x max_cas_blob_size_bytes. */
export function checkCompressedUploadSize(d: BlobDigest): void {
  const max = maxUploadBlobSize() * MAX_COMPRESSION_RATIO;
  if (max > 0 && d.size > max) {
    throw invalidArgument(
      `blob ${d.hash}/${d.size} is over ${max} bytes, the most one compressed upload may inflate to (${MAX_COMPRESSION_RATIO} x max_cas_blob_size_bytes); ` +
        "upload it as chunks and assemble it with SpliceBlob",
    );
  }
}

/**
 * Digests in one FindMissingBlobs: a little less than an 8 MiB request holds (~70 bytes a digest in
 * protobuf, ~92 in JSON). Bazel splits its calls by its 1 MiB outbound message size, ~15,000
 * digests each; Pants sends a whole tree's digests in one call. The index calls do not grow with
 * the count (one per shard).
 */
export const MAX_FIND_MISSING_DIGESTS = 80_000;

/**
 * Subrequests one GetTree call spends reading directories (merkle.ts DirectoryReadCost: one index
 * call per shard for each batch of up to 500 small directories, one R2 read per directory over
 * 4 KiB), whatever page_size asks; past it the answer carries a next_page_token, which REAPI allows
 * ("the server may place its own limit"). Default 5,000, half of a paid Worker's subrequests: a
 * tree of small directories, the common case, then streams whole (remote-apis-sdks clients ignore
 * the token of a GetTree without page_size). MAX_TREE_READS_PER_CALL lowers it (a free plan allows
 * 50 subrequests per request); MAX_TREE_DIRECTORIES_PER_CALL is its older name.
 */
export const maxTreeReadsPerCall = () => {
  const env = kilnEnv();
  const n = Number(env.MAX_TREE_READS_PER_CALL ?? env.MAX_TREE_DIRECTORIES_PER_CALL);
  return Number.isSafeInteger(n) && n > 0 ? n : 5_000;
};

/**
 * Subrequests one SpliceBlob may make (MAX_SPLICE_SUBREQUESTS; default 9,000, under a paid
 * Worker's 10,000 per request; a free one allows 1,000). Counted before anything is read or
 * written (spliceCost): a splice that ran out part-way would fail UNAVAILABLE, which clients
 * retry, to fail the same way again.
 */
export const maxSpliceSubrequests = () => {
  const n = Number(kilnEnv().MAX_SPLICE_SUBREQUESTS);
  return Number.isSafeInteger(n) && n > 0 ? n : 9_000;
};

/**
 * What a splice of `chunks` chunks into a blob of `size` bytes costs in subrequests, at most: a
 * read of each chunk (an R2 get, or an index call for one of 4 KiB or less), two index lookups per
 * shard (is the blob there, are the chunks), and the write: one verified put, or, above
 * `resumableAbove`, two calls per 8 MiB part (the part and its saved session) and a few more.
 */
export function spliceCost(chunks: number, size: number, shards: number, resumableAbove: number, partSize: number): number {
  const write = size > resumableAbove ? 2 * Math.ceil(size / partSize) + 4 : 2;
  return chunks + 2 * shards + write;
}

/**
 * Subrequests one SplitBlob may make (MAX_SPLIT_SUBREQUESTS; default 9,000, as for a splice). A
 * split is refused before the blob is read when splitCost says cutting it would pass the budget,
 * and stopped before a batch of chunks would, as it counts its calls: at the defaults, a first
 * split of a blob of about 1.9 GiB or more.
 */
export const maxSplitSubrequests = () => {
  const n = Number(kilnEnv().MAX_SPLIT_SUBREQUESTS);
  return Number.isSafeInteger(n) && n > 0 ? n : 9_000;
};

/**
 * What cutting a blob of `size` bytes afresh with FastCDC at `avgChunk` costs in subrequests, as
 * expected before it is read (storage/chunked-blobs.ts counts the same calls while cutting):
 * - five calls however large: the CAS index's layout check (once per isolate), the touch, the
 *   read (an index call, then R2, for a blob of 4 KiB or less) and the split record's put;
 * - one per chunk: its R2 put (a chunk of 4 KiB or less has no put, but may cost its shard's
 *   addSmall call). size / avgChunk chunks: FastCDC 2020's mean chunk is a little over the average
 *   (580 KiB at 512 KiB, measured), so this counts a few more than it cuts, the safe side;
 * - per batch of `batchBytes`, an index lookup and an index add for each shard its chunks fall in:
 *   of `shards`, a batch of k chunks touches shards x (1 - (1 - 1/shards)^k) on average (10.3 of
 *   16 for 16 chunks), not all of them. Counting all would refuse blobs of 1.5 to 2 GiB that split
 *   within 9,000; a batch that touches more than the average is caught by the count while cutting.
 * Re-cutting a blob whose chunks are already stored costs less: no puts and no adds.
 */
export function splitCost(size: number, avgChunk: number, shards: number, batchBytes: number): number {
  const chunks = Math.ceil(size / avgChunk);
  const perBatch = Math.max(1, Math.floor(batchBytes / avgChunk));
  const touched = (k: number) => shards * (1 - (1 - 1 / shards) ** k);
  const batchCalls = Math.floor(chunks / perBatch) * touched(perBatch) + touched(chunks % perBatch);
  return Math.ceil(5 + chunks + 2 * batchCalls);
}

/**
 * The refusal of a SplitBlob that would pass MAX_SPLIT_SUBREQUESTS: `cost` is splitCost's estimate
 * (nothing read yet), or, once `counted`, the calls made so far and those the next batch of chunks
 * would make. FAILED_PRECONDITION, not INVALID_ARGUMENT (the request is well formed: the blob
 * exists and may be split, only not within this server's budget) and not RESOURCE_EXHAUSTED, which
 * REAPI lists for SplitBlob's storage quota but Bazel's retrier, like UNAVAILABLE, retries: every
 * try would fail the same way, each after thousands of R2 calls. FAILED_PRECONDITION is not
 * retried; the client can read the blob whole instead.
 */
export function splitOverBudget(d: BlobDigest, cost: number, budget: number, counted: boolean): ConnectError {
  const what = counted
    ? `cutting it, the split would make ${cost} subrequests with its next batch of chunks`
    : `cutting it afresh makes about ${cost} subrequests`;
  const left = counted ? "the chunks stored so far are ordinary CAS blobs; no split was recorded" : "nothing was read or stored";
  return new ConnectError(
    `blob ${d.hash}/${d.size} (${d.size} bytes) cannot be split here: ${what}, over MAX_SPLIT_SUBREQUESTS (${budget}); ` +
      `read it whole with ByteStream.Read, which has no such limit; ${left}`,
    Code.FailedPrecondition,
  );
}

/**
 * ResultStore list and search offsets ("may be rejected if too high", says the proto): every
 * skipped row is read, so a large offset is a scan. Page tokens have no such cost.
 */
export const MAX_LIST_OFFSET = 10_000;

/** Largest JSON request body on REST (a 4 MiB batch is ~5.5 MiB as base64). */
export const MAX_JSON_BODY = 8 * 1024 * 1024;

/** INVALID_ARGUMENT naming the limit and the field when `count` is over `limit`. */
export function checkCount(count: number, limit: number, limitName: string, field: string, what: string): void {
  if (count > limit) throw invalidArgument(`${count} ${what} is over the limit of ${limit} (${limitName})`, field);
}
