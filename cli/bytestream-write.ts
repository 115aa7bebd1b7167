// ByteStream.Write without holding the blob (a small one excepted, see the end of this comment).
//
// First the bridge asks QueryWriteStatus what the worker would say without the data: a stored blob
// completes at once, and a refusal (no key, a bad name, a write_offset other than committed_size)
// is answered at once, without waiting for the client to send the rest. Blobs of at most 64 KiB
// skip the question: their bytes cost less than the round trip. The worker itself cannot answer
// early: over HTTP/1.1 it answers a gRPC-web stream, and a PUT, only after reading all of it (an
// answer while the client still sends breaks the client's connection).
//
// Then a fresh upload (write_offset 0) goes to the worker as one streamed HTTP PUT of its bytes to
// the upload's resource name, which the worker stores the same way as a Write (resumably, for large
// blobs); a resumed upload, or a name we do not understand, is relayed as the gRPC-web client stream
// it is. A blob over the chunking threshold (the edge's body cap) goes up as chunks and a
// SpliceBlob instead (chunked-blobs.ts).
//
// A small blob (at most 64 KiB, from offset 0) is neither asked about nor PUT: it is read whole and
// stored with other Writes' small blobs in one BatchUpdateBlobs (small-write-batcher.ts). For such
// a blob the worker's cost per request is nearly all of its cost, so one request per blob would
// cap the bridge at the worker's request rate.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type Transport } from "@connectrpc/connect";
import { Capabilities, ContentAddressableStorage } from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import {
  ByteStream,
  type WriteRequest,
  type WriteResponseSchema,
} from "../src/gen/google/bytestream/bytestream_pb.ts";
import type { BlobDigest } from "../src/shared/digest.ts";
import { parseWriteResource, resourcePath } from "../src/shared/resource-names.ts";
import { zstdDecode } from "../src/storage/zstd/decoder.ts";
import { writeChunked, type BridgeChunkPlan, type ChunkPolicy } from "./chunked-blobs.ts";
import { fromHttpError } from "./errors.ts";
import { forwardClientStream } from "./forward.ts";
import { forwardedMetadata } from "./metadata.ts";
import { SmallWriteBatcher, type SendBatch, type SmallBlob } from "./small-write-batcher.ts";

type WriteResponseInit = MessageInitShape<typeof WriteResponseSchema>;

/** The blob size of `{instance}/uploads/{uuid}/blobs/{hash}/{size}[/...]`; undefined: let the worker judge the name. */
export function uploadSize(resourceName: string): number | undefined {
  try {
    const r = parseWriteResource(resourceName);
    return r.compressor ? undefined : r.digest.size;
  } catch {
    return undefined;
  }
}

/**
 * Blobs up to this size, from offset 0, are batched without a QueryWriteStatus first. Held whole
 * until their batch returns, so small enough that 16 in flight cost a MiB; large enough to take in
 * the many small files (sources, headers, action and directory messages) that make most Writes.
 */
const SMALL_BLOB = 64 * 1024;

/** The batches small Writes share (one per bridge, whichever way a Write came in). */
export type SmallWrites = SmallWriteBatcher<Lane>;
export const smallWrites = (upstream: Transport): SmallWrites => new SmallWriteBatcher(batchUpdateBlobs(upstream));

/** The blob size of a Write whose first message makes it a small one (batched); undefined otherwise. */
export function smallUploadSize(head: WriteRequest): number | undefined {
  const size = uploadSize(head.resourceName);
  return size !== undefined && size <= SMALL_BLOB && head.writeOffset === 0n ? size : undefined;
}

export function byteStreamWrite(upstreamUrl: string, upstream: Transport, chunking?: ChunkPolicy, batcher = smallWrites(upstream)) {
  const base = upstreamUrl.replace(/\/+$/, "");
  return async (requests: AsyncIterable<WriteRequest>, ctx: HandlerContext): Promise<WriteResponseInit> => {
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    const head = first.done ? undefined : first.value;
    const size = head && uploadSize(head.resourceName);
    if (head && size === undefined) {
      const zstd = await compressedChunking(chunking, head, ctx);
      if (zstd) return putCompressedChunks(upstream, zstd, head, it, ctx);
    }
    if (!head || size === undefined) return forwardClientStream(upstream, ByteStream.method.write, replay(head, it), ctx);
    const url = `${base}/${resourcePath(head.resourceName)}`;
    // A small blob from offset 0 goes straight to a batch: asking first would cost a round trip
    // to save sending a few bytes (the worker stores a small blob again, verified, and says so).
    if (smallUploadSize(head) !== undefined) return writeSmall(batcher, upstream, size, head, it, ctx);

    const status = await writeStatus(upstream, head.resourceName, ctx).catch((e: unknown) => {
      void it.return?.(); // every early answer stops reading the client, as the worker's own Write does
      throw e;
    });
    if (status.complete) {
      void it.return?.();
      return { committedSize: BigInt(size) };
    }
    if (head.writeOffset !== status.committedSize) {
      void it.return?.();
      throw new ConnectError(
        status.committedSize === 0n
          ? `write_offset ${head.writeOffset}: nothing is committed for this upload, start at 0`
          : `write_offset ${head.writeOffset} does not match committed_size ${status.committedSize}; call QueryWriteStatus and resume there`,
        Code.InvalidArgument,
      );
    }
    if (status.committedSize > 0n) return forwardClientStream(upstream, ByteStream.method.write, replay(head, it), ctx);
    const plan = await chunking?.(ctx, parseWriteResource(head.resourceName).instanceName);
    if (plan && size > plan.above) return putChunks(upstream, plan, size, head, it, ctx);
    return put(upstream, url, size, head, it, ctx);
  };
}

/** QueryWriteStatus upstream; an upload nobody has started is committed_size 0, not NOT_FOUND. */
async function writeStatus(upstream: Transport, resourceName: string, ctx: HandlerContext) {
  try {
    const res = await upstream.unary(ByteStream.method.queryWriteStatus, ctx.signal, ctx.timeoutMs(), forwardedMetadata(ctx.requestHeader), {
      resourceName,
    });
    return res.message;
  } catch (e) {
    if (e instanceof ConnectError && e.code === Code.NotFound) return { committedSize: 0n, complete: false };
    throw e;
  }
}

async function put(
  upstream: Transport,
  url: string,
  size: number,
  head: WriteRequest,
  rest: AsyncIterator<WriteRequest>,
  ctx: HandlerContext,
): Promise<WriteResponseInit> {
  const body = new WriteBody(head, rest, size);
  const headers = forwardedMetadata(ctx.requestHeader);
  headers.set("content-type", "application/octet-stream");
  headers.set("content-length", String(size));
  let failure: ConnectError;
  try {
    // redirect "error" is what keeps this streaming: with any other mode undici's fetch clones the
    // request, tee()ing the body, and the unread branch keeps every chunk until the PUT ends.
    const res = await fetch(url, { method: "PUT", body: body.stream, headers, signal: ctx.signal, duplex: "half", redirect: "error" });
    if (res.ok) {
      await res.body?.cancel();
      return { committedSize: BigInt(size) };
    }
    failure = await fromHttpError(res);
  } catch (e) {
    // The client closed its stream before finish_write: no error (ByteStream), the answer is what
    // the worker committed of the aborted PUT (0 for a blob stored by one put).
    if (body.endedEarly) return { committedSize: (await writeStatus(upstream, head.resourceName, ctx)).committedSize };
    if (body.failure) throw body.failure;
    // The client hung up or its deadline passed: fetch was aborted through ctx.signal.
    if (ctx.signal.aborted) throw ConnectError.from(ctx.signal.reason ?? "the client cancelled", Code.Canceled);
    failure = new ConnectError(`PUT to the worker failed: ${causeOf(e)}`, Code.Unavailable, undefined, undefined, e);
  } finally {
    // The worker may answer before reading everything (see the top): stop reading the client.
    body.stop();
  }
  // Another client may have stored the same blob meanwhile, which the worker answers early, and
  // that answer can be lost (see the top): then the Write has done its job all the same.
  const after = await writeStatus(upstream, head.resourceName, ctx).catch(() => undefined);
  if (after?.complete) return { committedSize: BigInt(size) };
  throw failure;
}

/** Which Writes may share one BatchUpdateBlobs: the same instance, under the same credentials. */
interface Lane {
  instanceName: string;
  authorization: string | null;
}

/** A small blob read to finish_write, then stored in a batch with others of its lane. */
export async function writeSmall(
  batcher: SmallWrites,
  upstream: Transport,
  size: number,
  head: WriteRequest,
  rest: AsyncIterator<WriteRequest>,
  ctx: HandlerContext,
): Promise<WriteResponseInit> {
  const { instanceName, digest } = parseWriteResource(head.resourceName);
  const body = new WriteBody(head, rest, size);
  const data = new Uint8Array(size);
  try {
    let offset = 0;
    // WriteBody has checked that the pieces add up to `size`, ending with finish_write.
    for await (const piece of body.stream) {
      data.set(piece, offset);
      offset += piece.byteLength;
    }
  } catch (e) {
    // Closed before finish_write: nothing was sent; the answer is what the worker has of it, as for a PUT.
    if (body.endedEarly) return { committedSize: (await writeStatus(upstream, head.resourceName, ctx)).committedSize };
    throw body.failure ?? e;
  } finally {
    body.stop();
  }
  // Only the credentials travel with a batch: other metadata (requestmetadata-bin) is one caller's.
  const authorization = ctx.requestHeader.get("authorization");
  const lane = `${instanceName}\n${authorization ?? ""}`;
  await batcher.write(lane, { instanceName, authorization }, { hash: digest.hash, size, data }, ctx.signal, ctx.timeoutMs());
  return { committedSize: BigInt(size) };
}

/**
 * One batch as BatchUpdateBlobs calls: one, unless the worker's max_batch_total_size_bytes
 * (asked once per lane through GetCapabilities; an operator may set it below a batch's 1 MiB) is
 * smaller than the batch, which then goes as several calls that each fit. Each blob's answer is
 * found by its digest (a batch may hold one blob twice).
 */
function batchUpdateBlobs(upstream: Transport): SendBatch<Lane> {
  const limits = new Map<string, Promise<number>>();
  const maxBatchBytes = (lane: Lane, headers: Headers, timeoutMs: number | undefined): Promise<number> => {
    const key = `${lane.instanceName}\n${lane.authorization ?? ""}`;
    let limit = limits.get(key);
    if (!limit) {
      limit = upstream
        .unary(Capabilities.method.getCapabilities, undefined, timeoutMs, headers, { instanceName: lane.instanceName })
        .then((r) => Number(r.message.cacheCapabilities?.maxBatchTotalSizeBytes ?? 0n) || Infinity);
      limits.set(key, limit);
      // Not known (the worker away, the key refused): the batch goes as it is, and says why if it fails.
      limit.catch(() => limits.delete(key));
    }
    return limit.catch(() => Infinity);
  };
  const send = async ({ instanceName }: Lane, headers: Headers, blobs: readonly SmallBlob[], timeoutMs: number | undefined) => {
    const requests = blobs.map(({ hash, size, data }) => ({ digest: { hash, sizeBytes: BigInt(size) }, data }));
    // No signal: the Writes in a batch are cancelled one by one (small-write-batcher.ts).
    const res = await upstream.unary(ContentAddressableStorage.method.batchUpdateBlobs, undefined, timeoutMs, headers, { instanceName, requests });
    const answers = res.message.responses;
    const used = new Set<number>();
    return blobs.map(({ hash, size }) => {
      const i = answers.findIndex((r, j) => !used.has(j) && r.digest?.hash === hash && r.digest.sizeBytes === BigInt(size));
      if (i < 0) return new ConnectError(`the worker's BatchUpdateBlobs answer says nothing of blob ${hash}/${size}`, Code.Internal);
      used.add(i);
      const status = answers[i]!.status;
      return !status || status.code === 0 ? undefined : new ConnectError(status.message, status.code as Code);
    });
  };
  return async (lane, blobs, timeoutMs) => {
    const headers = new Headers();
    if (lane.authorization !== null) headers.set("authorization", lane.authorization);
    const max = await maxBatchBytes(lane, headers, timeoutMs);
    const calls: SmallBlob[][] = [];
    let bytes = 0;
    for (const b of blobs) {
      if (calls.length === 0 || bytes + b.data.byteLength > max) {
        calls.push([]);
        bytes = 0;
      }
      calls.at(-1)!.push(b);
      bytes += b.data.byteLength;
    }
    return (await Promise.all(calls.map((c) => send(lane, headers, c, timeoutMs)))).flat();
  };
}

/** A blob too large for one request: as chunks and a SpliceBlob (chunked-blobs.ts). */
async function putChunks(
  upstream: Transport,
  plan: BridgeChunkPlan,
  size: number,
  head: WriteRequest,
  rest: AsyncIterator<WriteRequest>,
  ctx: HandlerContext,
): Promise<WriteResponseInit> {
  const { instanceName, digest } = parseWriteResource(head.resourceName);
  const body = new WriteBody(head, rest, size);
  try {
    await writeChunked(upstream, plan, instanceName, digest, body.stream, ctx);
  } catch (e) {
    // Closed before finish_write: nothing is spliced, so nothing is committed (the chunks stay).
    if (body.endedEarly) return { committedSize: 0n };
    throw body.failure ?? e;
  } finally {
    body.stop();
  }
  return { committedSize: BigInt(size) };
}

/**
 * The plan for a compressed Write to move as chunks: its blob is over the chunking threshold and
 * it starts at offset 0 (a compressed Write is one request through the edge, whose cap applies to
 * its compressed bytes, which cannot be known up front). undefined: relay it as it is.
 */
async function compressedChunking(chunking: ChunkPolicy | undefined, head: WriteRequest, ctx: HandlerContext) {
  let r: ReturnType<typeof parseWriteResource>;
  try {
    r = parseWriteResource(head.resourceName);
  } catch {
    return undefined; // the worker says what is wrong with the name
  }
  if (r.compressor !== "zstd" || head.writeOffset !== 0n) return undefined;
  const plan = await chunking?.(ctx, r.instanceName);
  return plan && r.digest.size > plan.above ? { plan, instanceName: r.instanceName, digest: r.digest } : undefined;
}

/**
 * A compressed Write of a blob too large for one request: decompressed here (bounded, as the
 * worker decodes: src/storage/zstd/decoder.ts) and stored as chunks and a SpliceBlob, verified on
 * the uncompressed bytes. The chunks go up zstd-compressed again where the worker takes zstd
 * batches. committed_size counts the compressed bytes, as the worker's compressed Write does; -1
 * when the CAS holds the blob already.
 */
async function putCompressedChunks(
  upstream: Transport,
  { plan, instanceName, digest }: { plan: BridgeChunkPlan; instanceName: string; digest: BlobDigest },
  head: WriteRequest,
  rest: AsyncIterator<WriteRequest>,
  ctx: HandlerContext,
): Promise<WriteResponseInit> {
  const found = await upstream.unary(ContentAddressableStorage.method.findMissingBlobs, ctx.signal, ctx.timeoutMs(), forwardedMetadata(ctx.requestHeader), {
    instanceName,
    blobDigests: [{ hash: digest.hash, sizeBytes: BigInt(digest.size) }],
  });
  if (found.message.missingBlobDigests.length === 0) {
    void rest.return?.();
    return { committedSize: -1n };
  }
  const body = new WriteBody(head, rest, undefined);
  try {
    await writeChunked(upstream, plan, instanceName, digest, zstdDecode(body.stream, digest.size), ctx, true);
  } catch (e) {
    if (body.endedEarly) return { committedSize: 0n };
    throw body.failure ?? e;
  } finally {
    body.stop();
  }
  return { committedSize: BigInt(body.received) };
}

/**
 * The bytes of a Write's messages as a request body, checked on the way as the worker checks
 * a Write (offsets contiguous, one resource name, no more than the declared size, finish_write
 * exactly at the end), because a short or long body would otherwise fail as a bare Content-Length
 * mismatch instead of the INVALID_ARGUMENT a client expects.
 */
class WriteBody {
  readonly stream: ReadableStream<Uint8Array>;
  failure: ConnectError | undefined;
  /** The client's stream ended without finish_write. */
  endedEarly = false;
  private next: WriteRequest | undefined;
  private offset = 0;
  private finished = false;

  /** `size`: the bytes the name declares; undefined for compressed bytes, whose length is not known. */
  constructor(
    head: WriteRequest,
    private readonly rest: AsyncIterator<WriteRequest>,
    private readonly size: number | undefined,
  ) {
    this.next = head;
    const resourceName = head.resourceName;
    this.stream = new ReadableStream<Uint8Array>({
      pull: async (ctl) => {
        try {
          const chunk = await this.read(resourceName);
          if (chunk === undefined) ctl.close();
          else ctl.enqueue(chunk);
        } catch (e) {
          this.failure = e instanceof ConnectError ? e : ConnectError.from(e, Code.Canceled);
          ctl.error(this.failure);
        }
      },
    });
  }

  stop() {
    void this.rest.return?.();
  }

  /** Bytes taken from the client so far. */
  get received(): number {
    return this.offset;
  }

  private async pull(): Promise<WriteRequest | undefined> {
    const r = await this.rest.next();
    return r.done ? undefined : r.value;
  }

  /** The next non-empty data, or undefined at the end of the blob. */
  private async read(resourceName: string): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.finished) return undefined;
      const req = this.next ?? (await this.pull());
      this.next = undefined;
      if (!req) {
        this.endedEarly = true;
        throw invalid(`the stream ended at ${this.offset} bytes without finish_write`);
      }
      if (req.resourceName && req.resourceName !== resourceName) {
        throw invalid(`resource_name changed within one Write to "${req.resourceName.slice(0, 200)}"`);
      }
      if (req.writeOffset !== BigInt(this.offset)) throw invalid(`write_offset ${req.writeOffset} where ${this.offset} was expected`);
      this.offset += req.data.byteLength;
      if (this.size !== undefined && this.offset > this.size) throw invalid(`more than the ${this.size} bytes the resource name declares`);
      this.finished = req.finishWrite;
      if (req.finishWrite && this.size !== undefined && this.offset !== this.size) {
        throw invalid(`finish_write at ${this.offset} bytes where the resource name declares ${this.size}`);
      }
      if (req.data.byteLength) return req.data;
    }
  }
}

const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);

async function* replay(head: WriteRequest | undefined, rest: AsyncIterator<WriteRequest>): AsyncGenerator<WriteRequest> {
  if (!head) return;
  yield head;
  for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
}

const causeOf = (e: unknown) => (e instanceof Error && e.cause instanceof Error ? e.cause.message : String(e));
