// ContentAddressableStorage: FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs, GetTree.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ContentAddressableStorage, Compressor_Value, type Directory } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { maxBatchTotalSize } from "../config.ts";
import { asConnectError, invalidArgument } from "../errors.ts";
import { checkDigestFunction, parseDigest, toProtoDigest, type BlobDigest, blobKey } from "../storage/digest.ts";
import { childDirectories, readBytes, readDirectory } from "../storage/merkle.ts";
import { decodePageToken, encodePageToken } from "../storage/page-token.ts";
import { MAX_BATCH_ENTRIES, MAX_FIND_MISSING_DIGESTS, checkCount, maxTreeDirectoriesPerCall } from "./limits.ts";
import { scopeFor } from "./scope.ts";

/** Directories per streamed GetTree message when the client sets no page size. */
const TREE_CHUNK = 2_000;

const okStatus = { code: 0, message: "" }; // google.rpc.Code.OK
const statusOf = (e: unknown) => {
  const err = asConnectError(e);
  return { code: err.code as number, message: err.rawMessage };
};

async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function checkBatchSize(total: number, what: string) {
  const max = maxBatchTotalSize();
  if (total > max) {
    throw invalidArgument(`${what} totals ${total} bytes, over max_batch_total_size_bytes (${max}); use ByteStream for large blobs`);
  }
}

export const casService: ServiceImpl<typeof ContentAddressableStorage> = {
  async findMissingBlobs(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "read");
    checkDigestFunction(req.digestFunction);
    checkCount(req.blobDigests.length, MAX_FIND_MISSING_DIGESTS, "MAX_FIND_MISSING_DIGESTS", "blob_digests", "digests");
    const digests = req.blobDigests.map((d, i) => parseDigest(d, `blob_digests[${i}]`));
    const missing = await scope.store.index.missing(digests, true);
    return { missingBlobDigests: missing.map(toProtoDigest) };
  },

  async batchUpdateBlobs(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "write");
    checkDigestFunction(req.digestFunction);
    checkCount(req.requests.length, MAX_BATCH_ENTRIES, "MAX_BATCH_ENTRIES", "requests", "blobs");
    checkBatchSize(req.requests.reduce((n, r) => n + r.data.byteLength, 0), "the batch");
    const responses = await mapLimit(req.requests, 8, async (r) => {
      try {
        if (r.compressor !== Compressor_Value.IDENTITY) {
          throw invalidArgument(`compressor ${Compressor_Value[r.compressor] ?? r.compressor} is not supported`);
        }
        const d = parseDigest(r.digest);
        await scope.store.writeBytes(d, r.data);
        return { digest: r.digest, status: okStatus };
      } catch (e) {
        return { digest: r.digest, status: statusOf(e) };
      }
    });
    return { responses };
  },

  async batchReadBlobs(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "read");
    checkDigestFunction(req.digestFunction);
    checkCount(req.digests.length, MAX_BATCH_ENTRIES, "MAX_BATCH_ENTRIES", "digests", "digests");
    const digests = req.digests.map((d, i) => parseDigest(d, `digests[${i}]`));
    checkBatchSize(digests.reduce((n, d) => n + d.size, 0), "the requested blobs");
    const responses = await mapLimit(digests, 8, async (d) => {
      try {
        const data = await readBytes(scope.store, d);
        return { digest: toProtoDigest(d), data, compressor: Compressor_Value.IDENTITY, status: okStatus };
      } catch (e) {
        return { digest: toProtoDigest(d), status: statusOf(e) };
      }
    });
    return { responses };
  },

  /**
   * Breadth-first from the root. A page token carries the queue of directories still to visit,
   * so a page costs only its own reads. Parts of the tree absent from the CAS are omitted, as
   * REAPI allows; an absent root is NOT_FOUND.
   */
  async *getTree(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "read");
    checkDigestFunction(req.digestFunction);
    const root = parseDigest(req.rootDigest, "root_digest");
    if (req.pageSize < 0) throw invalidArgument("page_size must not be negative", "page_size");
    let queue: BlobDigest[] = req.pageToken ? decodePageToken(req.pageToken, root) : [root];
    const seen = new Set(queue.map(blobKey));
    const pageSize = Math.min(req.pageSize || Infinity, maxTreeDirectoriesPerCall());
    let page: Directory[] = [];
    let read = 0;
    let first = !req.pageToken;
    while (queue.length > 0) {
      const d = queue.shift()!;
      const dir = await readDirectory(scope.store, d);
      read++;
      if (!dir) {
        if (first) throw new ConnectError(`root directory ${blobKey(root)} not found`, Code.NotFound);
        continue;
      }
      first = false;
      page.push(dir);
      for (const c of childDirectories(dir)) {
        if (!seen.has(blobKey(c))) {
          seen.add(blobKey(c));
          queue.push(c);
        }
      }
      if (read >= pageSize && queue.length > 0) {
        yield { directories: page, nextPageToken: encodePageToken(queue, root) };
        return;
      }
      if (!req.pageSize && page.length >= TREE_CHUNK) {
        yield { directories: page, nextPageToken: "" };
        page = [];
      }
    }
    yield { directories: page, nextPageToken: "" };
  },

  async splitBlob() {
    throw new ConnectError("SplitBlob is not implemented (split_blob_support is false)", Code.Unimplemented);
  },
  async spliceBlob() {
    throw new ConnectError("SpliceBlob is not implemented (splice_blob_support is false)", Code.Unimplemented);
  },
};
