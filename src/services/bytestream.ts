// google.bytestream.ByteStream over the CAS: Read, Write (streamed, resumable), QueryWriteStatus.
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { ByteStream, type ReadRequest, type WriteRequest } from "../gen/google/bytestream/bytestream_pb.ts";
import { invalidArgument } from "../errors.ts";
import { parseReadResource, parseWriteResource } from "../storage/resource-name.ts";
import { committedBytes, uploadBlob, type WriteChunk } from "../storage/upload.ts";
import { scopeFor } from "./scope.ts";
import { checkUploadSize } from "./limits.ts";
import { rechunk } from "../storage/rechunk.ts";
import { readOf } from "../storage/read-failures.ts";
import { READ_HEAD_ROOM, READ_MESSAGE_BYTES } from "../shared/read-framing.ts";
import { readBlob } from "./blobs.ts";
import { parseLogStreamName } from "../execution/log-streams.ts";
import { readLiveLog } from "./live-logs.ts";
import { compressStream, decompressedChunks } from "./compression.ts";

/** Bytes per ReadResponse: well under the 4 MiB message limit clients assume. */
export const READ_CHUNK = READ_MESSAGE_BYTES;

const offsetOf = (v: bigint, field: string) => {
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`${field} ${v} is out of range`, field);
  return Number(v);
};

/**
 * What a ByteStream.Read sends, after every check: its messages' data, each piece one ReadResponse
 * (a blob in whole pieces of READ_CHUNK bytes read from R2, zstd frames, a live log's chunks). The
 * Connect router encodes them; the gRPC-web read lane (surfaces/bytestream-read-lane.ts) sends
 * each after its message header, in one buffer: `room` bytes in front of every piece are free for
 * that header (a blob's pieces have READ_HEAD_ROOM; other pieces none, and are copied).
 */
export async function openRead(ctx: HandlerContext, req: ReadRequest): Promise<{ pieces: AsyncIterable<Uint8Array>; room: number }> {
  if (req.readOffset < 0n) throw new ConnectError(`read_offset ${req.readOffset} is negative`, Code.OutOfRange);
  if (req.readLimit < 0n) throw invalidArgument(`read_limit ${req.readLimit} is negative`, "read_limit");
  const log = parseLogStreamName(req.resourceName);
  if (log) return { pieces: await readLiveLog(ctx, log, offsetOf(req.readOffset, "read_offset"), offsetOf(req.readLimit, "read_limit")), room: 0 };
  const r = parseReadResource(req.resourceName);
  // A compressed read starts at an uncompressed offset and cannot be limited (REAPI).
  if (r.compressor && req.readLimit !== 0n) throw invalidArgument("read_limit must be 0 for compressed-blobs", "read_limit");
  const blob = await readBlob(ctx, r.instanceName, r.digest, {
    offset: offsetOf(req.readOffset, "read_offset"),
    length: offsetOf(req.readLimit, "read_limit") || undefined,
  });
  // A body that breaks off ends the call UNAVAILABLE (read-failures.ts), after whole messages only.
  const what = `blob ${r.digest.hash}/${r.digest.size}`;
  // Each compressed message is one zstd frame of at most READ_CHUNK uncompressed bytes.
  if (r.compressor) return { pieces: readOf(what, "retry", () => compressStream(blob.body, blob.length)), room: 0 };
  return { pieces: readOf(what, "retry", () => rechunk(blob.body, READ_CHUNK, blob.length, READ_HEAD_ROOM)), room: READ_HEAD_ROOM };
}

export const byteStreamService: ServiceImpl<typeof ByteStream> = {
  async *read(req, ctx) {
    for await (const data of (await openRead(ctx, req)).pieces) yield { data };
  },

  async write(requests, ctx) {
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done) throw invalidArgument("Write needs at least one request with resource_name");
    const head: WriteRequest = first.value;
    const resourceName = head.resourceName;
    const r = parseWriteResource(resourceName);
    const scope = await scopeFor(ctx, r.instanceName, "write");
    const firstOffset = offsetOf(head.writeOffset, "write_offset");

    // Another client may have stored the blob already: complete at once (REAPI early return,
    // whose committed_size is -1 for a compressed upload).
    if (await scope.store.index.has(r.digest)) {
      void it.return?.();
      return { committedSize: r.compressor ? -1n : BigInt(r.digest.size) };
    }
    // The edge caps the bytes a request carries: for a compressed upload those are the compressed
    // bytes, so a blob larger than max_cas_blob_size_bytes that compresses under it goes up whole.
    checkUploadSize(r.digest, Boolean(r.compressor));

    async function* chunks(): AsyncGenerator<WriteChunk> {
      yield { offset: firstOffset, data: head.data, finish: head.finishWrite };
      for (let n = it.next(); ; n = it.next()) {
        const { value, done } = await n;
        if (done) return;
        if (value.resourceName && value.resourceName !== resourceName) {
          throw invalidArgument(`resource_name changed within one Write to "${value.resourceName.slice(0, 200)}"`, "resource_name");
        }
        yield { offset: offsetOf(value.writeOffset, "write_offset"), data: value.data, finish: value.finishWrite };
      }
    }
    if (!r.compressor) return { committedSize: BigInt((await uploadBlob(scope.store, r.uploadId, r.digest, firstOffset, chunks())).committed) };
    const compressed = decompressedChunks(chunks(), firstOffset, r.digest.size);
    const { committed, done } = await uploadBlob(scope.store, r.uploadId, r.digest, firstOffset, compressed.chunks);
    // A finished compressed Write answers where its offsets reached (the first plus the compressed
    // bytes): what Bazel checks committed_size against. An unfinished one answers what is committed.
    return { committedSize: BigInt(done ? compressed.offset() : committed) };
  },

  async queryWriteStatus(req, ctx) {
    const r = parseWriteResource(req.resourceName);
    const scope = await scopeFor(ctx, r.instanceName, "write");
    if (await scope.store.index.has(r.digest)) return { committedSize: BigInt(r.digest.size), complete: true };
    const committed = await committedBytes(scope.store, r.uploadId, r.digest);
    if (committed === null) throw new ConnectError(`no upload in progress for ${req.resourceName.slice(0, 200)}`, Code.NotFound);
    return { committedSize: BigInt(committed), complete: false };
  },
};
