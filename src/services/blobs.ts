// Blob bytes over plain HTTP (the Bazel HTTP cache and the ByteStream-named blob routes): the
// same checks as ByteStream.Read and Write, for surfaces that carry raw bytes, not messages.
import type { HandlerContext } from "@connectrpc/connect";
import { invalidArgument, notFound } from "../errors.ts";
import { drain } from "../storage/drain.ts";
import type { BlobRead } from "../storage/blob-store.ts";
import { parseHash, type BlobDigest } from "../storage/digest.ts";
import { resumableAbove, uploadBlob, type WriteChunk } from "../storage/upload.ts";
import { scopeFor } from "./scope.ts";
import { checkUploadSize } from "./limits.ts";
import { countedRead } from "../metrics/lookups.ts";

export interface ByteRange {
  offset: number;
  /** undefined: to the end. */
  length?: number;
}

export async function readBlob(ctx: HandlerContext, instanceName: string, d: BlobDigest, range?: ByteRange): Promise<BlobRead> {
  const s = await scopeFor(ctx, instanceName, "read");
  return countedRead(s.store.read(d, range?.offset ?? 0, range?.length ?? 0));
}

/** A blob known only by its hash; the caller learns its size. */
export async function readBlobByHash(
  ctx: HandlerContext,
  instanceName: string,
  hash: string,
  range?: ByteRange,
): Promise<BlobRead & { size: number }> {
  const s = await scopeFor(ctx, instanceName, "read");
  const blob = await countedRead(s.store.readByHash(parseHash(hash), range?.offset ?? 0, range?.length));
  if (!blob) throw notFound(`blob ${hash} not found`);
  return blob;
}

export async function blobSize(ctx: HandlerContext, instanceName: string, hash: string): Promise<number | null> {
  const s = await scopeFor(ctx, instanceName, "read");
  return s.store.sizeOf(parseHash(hash));
}

/**
 * A blob up to this size is stored without asking the index whether it is there already: clients
 * write what FindMissingBlobs called missing, so the question is nearly always "no" and costs a
 * Durable Object round trip, a third of a small write's time, to save a verified put of a few KiB
 * (which, for a blob that is there, rewrites the same bytes).
 */
const ASK_INDEX_ABOVE_BYTES = 64 * 1024;

export interface BlobBody {
  stream: ReadableStream<Uint8Array>;
  /** The stream is known to carry exactly the digest's size (Content-Length). */
  sized: boolean;
  /** The request carried zstd, decompressed into `stream`: the edge capped its compressed bytes. */
  compressed?: boolean;
}

/**
 * Stores an HTTP body as a blob, in one verified put; with an upload id (a ByteStream upload
 * name), a blob too large for one put goes through the resumable path, so a dropped PUT can be
 * resumed with ByteStream.Write at QueryWriteStatus's committed_size.
 */
export async function writeBlob(ctx: HandlerContext, instanceName: string, d: BlobDigest, body: BlobBody, uploadId?: string): Promise<void> {
  const s = await scopeFor(ctx, instanceName, "write");
  if (d.size > ASK_INDEX_ABOVE_BYTES && (await s.store.index.has(d))) {
    // Early completion, but over HTTP the answer waits for the whole body (answering while the
    // client still sends breaks its connection): read it to the end without storing or hashing it.
    const sent = await drain(body.stream);
    if (sent !== d.size) throw invalidArgument(`blob ${d.hash}/${d.size}: ${sent} bytes where the digest declares ${d.size}`);
    return;
  }
  checkUploadSize(d, body.compressed);
  if (uploadId && d.size > resumableAbove(s.env)) await uploadBlob(s.store, uploadId, d, 0, bodyChunks(body.stream));
  else await s.store.write(d, body.stream, { sized: body.sized });
}

async function* bodyChunks(body: ReadableStream<Uint8Array>): AsyncGenerator<WriteChunk> {
  let offset = 0;
  for await (const data of body) {
    yield { offset, data, finish: false };
    offset += data.byteLength;
  }
  yield { offset, data: new Uint8Array(), finish: true };
}
