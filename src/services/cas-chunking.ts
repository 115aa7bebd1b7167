// ContentAddressableStorage.SplitBlob and SpliceBlob (REAPI 2.4 blob chunking): a client moves a
// blob larger than one request can carry (the edge's body cap, max_cas_blob_size_bytes) as
// chunks, each an ordinary CAS blob. Kiln splits with FastCDC 2020 at the parameters Capabilities
// advertises; a splice takes chunks cut any way (ChunkingFunction is only a hint there) and
// verifies the assembled blob's digest itself, as REAPI requires.
import type { HandlerContext } from "@connectrpc/connect";
import {
  ChunkingFunction_Value,
  type SpliceBlobRequest,
  type SplitBlobRequest,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { Code, invalidArgument } from "../errors.ts";
import { missingBlobs } from "../shared/status.ts";
import { FastCdc, fastCdc2020Params } from "../shared/fastcdc.ts";
import { STORE_BATCH_BYTES, spliceBlob as spliceStored, splitBlob as splitStored, type SplitBudget } from "../storage/chunked-blobs.ts";
import { checkDigestFunction, isEmptyBlob, missingSubject, parseDigest, toProtoDigest, type BlobDigest } from "../storage/digest.ts";
import { chunkAvgSize } from "../config.ts";
import { MAX_SPLICE_CHUNKS, checkCount, maxSpliceSubrequests, maxSplitSubrequests, spliceCost, splitCost, splitOverBudget } from "./limits.ts";
import { PART_SIZE, resumableAbove } from "../storage/upload.ts";
import { scopeFor } from "./scope.ts";

let chunker: FastCdc | undefined;
/** The FastCDC chunker for the advertised parameters (CHUNK_AVG_SIZE_BYTES, seed 0). */
export function serverChunker(): FastCdc {
  const avg = chunkAvgSize();
  if (chunker?.params.avgSize !== avg) chunker = new FastCdc(fastCdc2020Params(avg));
  return chunker;
}

export async function splitBlob(req: SplitBlobRequest, ctx: HandlerContext) {
  const scope = await scopeFor(ctx, req.instanceName, "read");
  checkDigestFunction(req.digestFunction);
  const d = parseDigest(req.blobDigest, "blob_digest");
  // Whatever the client prefers, the chunks are cut with FastCDC 2020 (REAPI lets the server choose).
  const cdc = serverChunker();
  const chunks = isEmptyBlob(d) ? [] : await splitStored(scope.store, d, cdc, splitBudget(d, cdc, scope.store.index.shards));
  return { chunkDigests: chunks.map(toProtoDigest), chunkingFunction: ChunkingFunction_Value.FAST_CDC_2020 };
}

/** MAX_SPLIT_SUBREQUESTS for a split of `d`, with what cutting it afresh is expected to cost. */
function splitBudget(d: BlobDigest, cdc: FastCdc, shards: number): SplitBudget {
  const max = maxSplitSubrequests();
  return {
    max,
    estimate: splitCost(d.size, cdc.params.avgSize, shards, STORE_BATCH_BYTES),
    refuse: (cost, counted) => splitOverBudget(d, cost, max, counted),
  };
}

export async function spliceBlob(req: SpliceBlobRequest, ctx: HandlerContext) {
  const scope = await scopeFor(ctx, req.instanceName, "write");
  checkDigestFunction(req.digestFunction);
  if (!(req.chunkingFunction in ChunkingFunction_Value)) {
    throw invalidArgument(`chunking_function ${req.chunkingFunction} is not a ChunkingFunction`, "chunking_function");
  }
  const blob = parseDigest(req.blobDigest, "blob_digest");
  checkCount(req.chunkDigests.length, MAX_SPLICE_CHUNKS, "MAX_SPLICE_CHUNKS", "chunk_digests", "chunks");
  const chunks = req.chunkDigests.map((c, i) => parseDigest(c, `chunk_digests[${i}]`));
  const total = chunks.reduce((n, c) => n + c.size, 0);
  if (total !== blob.size) {
    throw invalidArgument(`the chunks total ${total} bytes where blob_digest declares ${blob.size}; nothing was stored`, "chunk_digests");
  }
  const cost = spliceCost(chunks.length, blob.size, scope.store.index.shards, resumableAbove(scope.env), PART_SIZE);
  const budget = maxSpliceSubrequests();
  if (cost > budget) {
    throw invalidArgument(
      `a splice of ${chunks.length} chunks into ${blob.size} bytes makes up to ${cost} subrequests, over MAX_SPLICE_SUBREQUESTS (${budget}); ` +
        "splice fewer, larger chunks (a chunk may itself be a spliced blob); nothing was stored",
      "chunk_digests",
    );
  }
  // Already stored: a no-op, as REAPI allows (the blob's lifetime is extended by the check).
  if ((await scope.store.index.missing([blob], true)).length === 0) return { blobDigest: toProtoDigest(blob) };
  const missing = await scope.store.index.missing(chunks, true);
  if (missing.length > 0) {
    // REAPI names NOT_FOUND for a missing chunk; the violations say which, as Execute's do.
    throw missingBlobs(`${missing.length} of the ${chunks.length} chunks are not in the CAS; upload them first`, missing.map(missingSubject), Code.NotFound);
  }
  const cutWith = req.chunkingFunction === ChunkingFunction_Value.FAST_CDC_2020 ? serverChunker() : undefined;
  await spliceStored(scope.store, blob, chunks, cutWith);
  return { blobDigest: toProtoDigest(blob) };
}
