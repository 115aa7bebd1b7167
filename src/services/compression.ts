// Compressed transfers (REAPI `compressed-blobs/{compressor}/...` and batch `compressor` fields).
// The CAS stores blobs uncompressed: uploads are decompressed on the way in and verified on the
// uncompressed bytes, downloads are compressed on the way out. Both ways are streams.
import { Compressor_Value } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "../errors.ts";
import { BYTESTREAM_COMPRESSORS } from "../storage/resource-name.ts";
import type { WriteChunk } from "../storage/upload.ts";
import { zstdDecode } from "../storage/zstd/decoder.ts";
import { FRAME_BYTES, zstdFrames } from "../storage/zstd/encoder.ts";
import { rechunk } from "../storage/rechunk.ts";

/** Compressors on ByteStream and in batches (IDENTITY is implied, never listed): those resource names accept. */
export const SUPPORTED_COMPRESSORS: readonly Compressor_Value[] = [...BYTESTREAM_COMPRESSORS].map(
  (name) => Compressor_Value[name.toUpperCase() as keyof typeof Compressor_Value],
);

/** INVALID_ARGUMENT unless `c` is IDENTITY or supported. */
export function checkCompressor(c: Compressor_Value, field = "compressor"): Compressor_Value {
  if (c !== Compressor_Value.IDENTITY && !SUPPORTED_COMPRESSORS.includes(c)) {
    const names = ["IDENTITY", ...SUPPORTED_COMPRESSORS.map((s) => Compressor_Value[s])].join(", ");
    throw invalidArgument(`${field} ${Compressor_Value[c] ?? c} is not supported (supported: ${names})`, field);
  }
  return c;
}

/**
 * A blob's bytes compressed for the wire (zstd: frames of up to 1 MiB each), read from R2 a whole
 * frame at a time (rechunk), not chunk by chunk. `length`: the bytes to come, if known.
 */
export const compressStream = (body: ReadableStream<Uint8Array>, length?: number): AsyncGenerator<Uint8Array> => zstdFrames(rechunk(body, FRAME_BYTES, length));

/**
 * The chunks of a compressed Write as the uncompressed chunks the CAS stores. REAPI's offsets:
 * the first is in the uncompressed blob (where a resumed upload continues), each later one is
 * the first plus the compressed bytes sent before it. The uncompressed chunks carry uncompressed
 * offsets from the first, so the upload path checks sizes and resumes as for any Write.
 * `offset()` is where the client's offsets have reached: the first plus every compressed byte.
 */
export function decompressedChunks(chunks: AsyncIterable<WriteChunk>, firstOffset: number, size: number) {
  let expected = firstOffset;
  let finished = false;
  async function* compressed(): AsyncGenerator<Uint8Array> {
    for await (const c of chunks) {
      // Read on after finish_write: the client's stream ends there, or the Write is refused.
      if (finished) throw invalidArgument("a message after finish_write");
      if (c.offset !== expected) {
        throw invalidArgument(`write_offset ${c.offset} where ${expected} was expected (the first offset plus the compressed bytes sent)`, "write_offset");
      }
      expected += c.data.byteLength;
      if (c.data.byteLength) yield c.data;
      finished = c.finish;
    }
  }
  async function* uncompressed(): AsyncGenerator<WriteChunk> {
    let at = firstOffset;
    for await (const data of zstdDecode(compressed(), size - firstOffset, () => finished)) {
      yield { offset: at, data, finish: false };
      at += data.byteLength;
    }
    if (finished) yield { offset: at, data: new Uint8Array(0), finish: true };
  }
  return { chunks: uncompressed(), offset: () => expected };
}

/** An HTTP body sent zstd-compressed, as the uncompressed bytes (at most `size` of them). */
export const decompressBody = (body: ReadableStream<Uint8Array>, size: number) => streamOf(zstdDecode(body, size));

/** A body to send zstd-compressed. */
export const compressBody = (body: ReadableStream<Uint8Array>, length?: number) => streamOf(compressStream(body, length));

/** A pull-driven stream over a generator: nothing is produced before the reader asks for it. */
function streamOf(gen: AsyncGenerator<Uint8Array>): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const { value, done } = await gen.next();
      if (done) ctl.close();
      else ctl.enqueue(value);
    },
    async cancel(reason) {
      await gen.return(reason);
    },
  });
}
