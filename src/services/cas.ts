// ContentAddressableStorage: FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs, GetTree (SplitBlob and
// SpliceBlob live in cas-chunking.ts).
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { ContentAddressableStorage, Compressor_Value, type DigestFunction_Value, type Directory } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { maxBatchTotalSize } from "../config.ts";
import { invalidArgument, rpcStatusOf } from "../errors.ts";
import { checkDigestFunction, parseDigest, parseDigests, toProtoDigest, blobKey, type BlobDigest } from "../storage/digest.ts";
import { childDirectories, DIRECTORY_BATCH, DirectoryReadCost, readBytes, readDirectories } from "../storage/merkle.ts";
import { decodePageToken, encodePageToken, seenKey, type TreeWalk } from "../storage/page-token.ts";
import { mapLimit } from "../storage/map-limit.ts";
import { MAX_BATCH_ENTRIES, MAX_FIND_MISSING_DIGESTS, checkCount, maxTreeReadsPerCall } from "./limits.ts";
import { scopeFor } from "./scope.ts";
import { checkCompressor } from "./compression.ts";
import { zstdDecompress } from "../storage/zstd/decoder.ts";
import { zstdCompress } from "../storage/zstd/encoder.ts";
import { spliceBlob, splitBlob } from "./cas-chunking.ts";
import { countFindMissing, countedRead } from "../metrics/lookups.ts";

/** Most directories, and about the most bytes of them, in one GetTree message (4 MiB is the usual cap). */
const TREE_CHUNK = 2_000;
const TREE_CHUNK_BYTES = 2 * 1024 * 1024;

const okStatus = { code: 0, message: "" }; // google.rpc.Code.OK

/** Small blobs one BatchReadBlobs reads from R2 when the index cannot give their bytes (see batchReadBlobs). */
const MAX_R2_FALLBACKS = 1_000;

/** Most uncompressed bytes the compressed blobs of one BatchUpdateBlobs may declare. */
const MAX_BATCH_DECOMPRESSED = 64 * 1024 * 1024;

function checkBatchSize(total: number, what: string) {
  const max = maxBatchTotalSize();
  if (total > max) {
    throw invalidArgument(`${what} totals ${total} bytes, over max_batch_total_size_bytes (${max}); use ByteStream for large blobs`);
  }
}

/** A FindMissingBlobs request, whatever codec read it; `digests` is parsed only once the caller may ask. */
export interface FindMissingQuery {
  instanceName: string;
  digestFunction: DigestFunction_Value;
  count: number;
  digests: () => readonly BlobDigest[];
}

/**
 * FindMissingBlobs itself: the positions in the request of the digests not in the CAS (each once,
 * in order). The Connect router's codec and the gRPC-web fast lane (surfaces/find-missing-fast-lane.ts)
 * both answer with it.
 */
export async function findMissingAt(ctx: HandlerContext, q: FindMissingQuery): Promise<number[]> {
  const scope = await scopeFor(ctx, q.instanceName, "read");
  checkDigestFunction(q.digestFunction);
  checkCount(q.count, MAX_FIND_MISSING_DIGESTS, "MAX_FIND_MISSING_DIGESTS", "blob_digests", "digests");
  const digests = q.digests();
  const missing = await scope.store.index.missingAt(digests, true);
  countFindMissing(digests.length, missing.length);
  return missing;
}

export const casService: ServiceImpl<typeof ContentAddressableStorage> = {
  async findMissingBlobs(req, ctx) {
    const missing = await findMissingAt(ctx, {
      instanceName: req.instanceName,
      digestFunction: req.digestFunction,
      count: req.blobDigests.length,
      digests: () => parseDigests(req.blobDigests, "blob_digests"),
    });
    // The request's own Digest messages: nothing to build or normalize for the answer.
    return { missingBlobDigests: missing.map((i) => req.blobDigests[i]!) };
  },

  async batchUpdateBlobs(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "write");
    checkDigestFunction(req.digestFunction);
    checkCount(req.requests.length, MAX_BATCH_ENTRIES, "MAX_BATCH_ENTRIES", "requests", "blobs");
    checkBatchSize(req.requests.reduce((n, r) => n + r.data.byteLength, 0), "the batch");
    // Each blob succeeds or fails on its own; one that cannot even be parsed is not written.
    const errors: unknown[] = new Array(req.requests.length);
    const parsed = req.requests.map((r, i) => {
      try {
        return { d: parseDigest(r.digest), compressed: checkCompressor(r.compressor) !== Compressor_Value.IDENTITY };
      } catch (e) {
        errors[i] = e;
        return undefined;
      }
    });
    // Compressed blobs are decompressed in memory: their declared sizes are bounded too (parsed
    // first, so a negative size cannot offset the others').
    const inflated = parsed.reduce((n, p) => n + (p?.compressed ? p.d.size : 0), 0);
    if (inflated > MAX_BATCH_DECOMPRESSED) {
      throw invalidArgument(`the compressed blobs of the batch declare ${inflated} bytes, over ${MAX_BATCH_DECOMPRESSED}; use ByteStream for large blobs`);
    }
    // One decoder at a time: each holds its frame's window while it runs.
    const toWrite: { d: BlobDigest; data: Uint8Array; i: number }[] = [];
    for (const [i, p] of parsed.entries()) {
      if (!p) continue;
      const data = req.requests[i]!.data;
      try {
        // Verified against the digest like any blob (writeMany): on the uncompressed bytes.
        toWrite.push({ d: p.d, data: p.compressed ? await zstdDecompress(data, p.d.size) : data, i });
      } catch (e) {
        errors[i] = e;
      }
    }
    (await scope.store.writeMany(toWrite)).forEach((e, k) => (errors[toWrite[k]!.i] = e));
    const responses = req.requests.map((r, i) => ({ digest: r.digest, status: errors[i] === undefined ? okStatus : rpcStatusOf(errors[i]) }));
    return { responses };
  },

  async batchReadBlobs(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "read");
    checkDigestFunction(req.digestFunction);
    checkCount(req.digests.length, MAX_BATCH_ENTRIES, "MAX_BATCH_ENTRIES", "digests", "digests");
    const digests = parseDigests(req.digests, "digests");
    checkBatchSize(digests.reduce((n, d) => n + d.size, 0), "the requested blobs");
    const zstd = req.acceptableCompressors.includes(Compressor_Value.ZSTD);
    // Small blobs come from the index in one call per shard, so a batch of thousands of them (remote-apis-sdks
    // sends up to 4,000) costs a few subrequests, not one each.
    const small = await scope.store.smallLookups(digests);
    // Small blobs the index holds without their bytes (stored in R2 by an older Kiln), or could not
    // answer for, are read from R2: at most MAX_R2_FALLBACKS of them, so a batch's subrequests stay
    // bound (the byte cap already bounds the larger blobs); the rest are UNAVAILABLE, to retry.
    let fallbacks = 0;
    const responses = await mapLimit(digests, 8, async (d, i) => {
      const looked = small[i];
      if ((looked === "r2" || looked instanceof ConnectError) && ++fallbacks > MAX_R2_FALLBACKS) {
        const why = looked instanceof ConnectError ? looked : new ConnectError(`more than ${MAX_R2_FALLBACKS} blobs of this batch must be read from R2; retry this one`, Code.Unavailable);
        return { digest: toProtoDigest(d), status: rpcStatusOf(why) };
      }
      try {
        const data = await countedRead(readBytes(scope.store, d, small[i]));
        // Compressed where the client accepts it and it saves bytes; otherwise sent as stored.
        const packed = zstd ? await zstdCompress(data) : undefined;
        if (packed && packed.byteLength < data.byteLength) {
          return { digest: toProtoDigest(d), data: packed, compressor: Compressor_Value.ZSTD, status: okStatus };
        }
        return { digest: toProtoDigest(d), data, compressor: Compressor_Value.IDENTITY, status: okStatus };
      } catch (e) {
        return { digest: toProtoDigest(d), status: rpcStatusOf(e) };
      }
    });
    return { responses };
  },

  /**
   * Breadth-first from the root, each directory once however many parents share it. With a
   * page_size, one page per call; without, the whole tree in messages of at most TREE_CHUNK
   * directories or about TREE_CHUNK_BYTES.
   * Every message but the last carries a next_page_token that resumes right after it (the token
   * holds the walk's queue and what it has met, so a resumed page costs only its own reads).
   * Parts of the tree absent from the CAS are omitted, as REAPI allows; an absent root is NOT_FOUND.
   */
  async *getTree(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "read");
    checkDigestFunction(req.digestFunction);
    const root = parseDigest(req.rootDigest, "root_digest");
    if (req.pageSize < 0) throw invalidArgument("page_size must not be negative", "page_size");
    const walk: TreeWalk = req.pageToken ? decodePageToken(req.pageToken, root) : { queue: [root], seen: new Set([seenKey(root)]) };
    const pageSize = req.pageSize > 0 ? Math.min(req.pageSize, TREE_CHUNK) : TREE_CHUNK;
    // One call spends at most this many subrequests reading (they are bounded); the client resumes.
    const budget = maxTreeReadsPerCall();
    let page: Directory[] = [];
    let pageBytes = 0;
    let spent = 0;
    let first = !req.pageToken;
    const token = (rest: BlobDigest[]) => encodePageToken({ queue: [...rest, ...walk.queue], seen: walk.seen }, root);
    while (walk.queue.length > 0) {
      // The next directories of the walk, as many as one read of them fits the page and the budget.
      const batch: BlobDigest[] = [];
      const cost = new DirectoryReadCost(scope.store);
      while (walk.queue.length > 0 && batch.length < Math.min(DIRECTORY_BATCH, pageSize - page.length)) {
        if (spent + cost.total + cost.marginal(walk.queue[0]!) > budget) break;
        cost.add(walk.queue[0]!);
        batch.push(walk.queue.shift()!);
      }
      if (batch.length === 0) {
        // The budget is spent (a page that is full was answered below): the client resumes here.
        yield { directories: page, nextPageToken: token([]) };
        return;
      }
      const { dirs, subrequests, read } = await readDirectories(scope.store, batch, budget - spent);
      spent += subrequests;
      // What the budget left unread (small directories an older Kiln stored in R2) goes back first in line.
      walk.queue.unshift(...batch.splice(read));
      for (let i = 0; i < batch.length; i++) {
        const dir = dirs[i];
        if (!dir) {
          if (first) throw new ConnectError(`root directory ${blobKey(root)} not found`, Code.NotFound);
          continue;
        }
        first = false;
        page.push(dir);
        pageBytes += batch[i]!.size;
        for (const c of childDirectories(dir)) {
          if (!walk.seen.has(seenKey(c))) {
            walk.seen.add(seenKey(c));
            walk.queue.push(c);
          }
        }
        const rest = batch.slice(i + 1);
        const more = rest.length > 0 || walk.queue.length > 0;
        if ((page.length >= pageSize || pageBytes >= TREE_CHUNK_BYTES) && more) {
          yield { directories: page, nextPageToken: token(rest) };
          if (req.pageSize > 0) return;
          page = [];
          pageBytes = 0;
        }
      }
      if (spent >= budget && walk.queue.length > 0) {
        yield { directories: page, nextPageToken: token([]) };
        return;
      }
    }
    yield { directories: page, nextPageToken: "" };
  },

  splitBlob,
  spliceBlob,
};
