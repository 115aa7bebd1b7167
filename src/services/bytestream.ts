// google.bytestream.ByteStream over the CAS: Read, Write (streamed, resumable), QueryWriteStatus.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ByteStream, type WriteRequest } from "../gen/google/bytestream/bytestream_pb.ts";
import { invalidArgument } from "../errors.ts";
import { parseReadResource, parseWriteResource } from "../storage/resource-name.ts";
import { committedBytes, uploadBlob, type WriteChunk } from "../storage/upload.ts";
import { scopeFor } from "./scope.ts";
import { checkUploadSize } from "./limits.ts";
import { rechunk } from "../storage/rechunk.ts";
import { readBlob } from "./blobs.ts";
import { parseLogStreamName } from "../execution/log-streams.ts";
import { readLiveLog } from "./live-logs.ts";
import { compressStream, decompressedChunks } from "./compression.ts";

/** Bytes per ReadResponse: well under the 4 MiB message limit clients assume. */
export const READ_CHUNK = 1024 * 1024;

const offsetOf = (v: bigint, field: string) => {
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`${field} ${v} is out of range`, field);
  return Number(v);
};

export const byteStreamService: ServiceImpl<typeof ByteStream> = {
  async *read(req, ctx) {
    if (req.readOffset < 0n) throw new ConnectError(`read_offset ${req.readOffset} is negative`, Code.OutOfRange);
    if (req.readLimit < 0n) throw invalidArgument(`read_limit ${req.readLimit} is negative`, "read_limit");
    const log = parseLogStreamName(req.resourceName);
    if (log) {
      const stream = await readLiveLog(ctx, log, offsetOf(req.readOffset, "read_offset"), offsetOf(req.readLimit, "read_limit"));
      for await (const data of stream) yield { data };
      return;
    }
    const r = parseReadResource(req.resourceName);
    // A compressed read starts at an uncompressed offset and cannot be limited (REAPI).
    if (r.compressor && req.readLimit !== 0n) throw invalidArgument("read_limit must be 0 for compressed-blobs", "read_limit");
    const blob = await readBlob(ctx, r.instanceName, r.digest, {
      offset: offsetOf(req.readOffset, "read_offset"),
      length: offsetOf(req.readLimit, "read_limit") || undefined,
    });
    // Each compressed message is one zstd frame of at most READ_CHUNK uncompressed bytes.
    const messages = r.compressor ? compressStream(blob.body, blob.length) : rechunk(blob.body, READ_CHUNK, blob.length);
    for await (const data of messages) yield { data };
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
    checkUploadSize(r.digest);

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
    if (!r.compressor) return { committedSize: BigInt(await uploadBlob(scope.store, r.uploadId, r.digest, firstOffset, chunks())) };
    const compressed = decompressedChunks(chunks(), firstOffset, r.digest.size);
    const committed = await uploadBlob(scope.store, r.uploadId, r.digest, firstOffset, compressed.chunks);
    // A whole compressed Write answers where its offsets reached (the first plus the compressed
    // bytes): what Bazel checks committed_size against. A partial one answers what is committed.
    return { committedSize: BigInt(committed === r.digest.size ? compressed.offset() : committed) };
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
