// zstd decompression inside workerd, streamed: fzstd, a pure-JS decoder with a streaming API
// (the WebAssembly build used for compression only decodes whole frames, and a client's frame
// may be the whole blob). Memory is the frame's window plus what one small slice of input
// expands to: input is fed SLICE bytes at a time because one compressed byte can stand for
// thousands of output bytes, and output past the declared size stops the decoder at once. Frames
// whose window (the decoder's buffer) is over MAX_WINDOW are refused before it is allocated.
import { Decompress } from "fzstd";
import { invalidArgument } from "../../shared/status.ts";
import { FrameGuard } from "./frame-guard.ts";

/**
 * Compressed bytes per decoder call. A call decodes every whole block it was given, and a 4-byte
 * RLE block stands for 128 KiB: 256 bytes bound one call's output to 8 MiB (1 KiB allowed 32 MiB).
 * fzstd gathers a block's slices without copying them until the block is whole.
 */
const SLICE = 256;

const corrupt = (e: unknown) =>
  invalidArgument(`the data is not a valid zstd stream (${e instanceof Error ? e.message : String(e)}); nothing was stored`);

class TooLarge extends Error {}

/**
 * Decompresses a zstd stream (one or more frames). Throws INVALID_ARGUMENT if it is not valid
 * zstd, ends inside a frame, or decompresses to more than `maxBytes`. `complete()` is asked when
 * the source ends: false (a client stream that broke off) ends the output where the data ended,
 * without requiring whole frames.
 */
export async function* zstdDecode(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  maxBytes: number,
  complete: () => boolean = () => true,
): AsyncGenerator<Uint8Array> {
  let out: Uint8Array[] = [];
  let total = 0;
  const decoder = new Decompress((block) => {
    total += block.byteLength;
    if (total > maxBytes) throw new TooLarge();
    // fzstd hands out a fresh array per block; keep it, do not copy it. Its last call may hand
    // out an empty one, which is no data.
    if (block.byteLength) out.push(block);
  });
  const guard = new FrameGuard();
  const push = (bytes: Uint8Array, final: boolean) => {
    guard.check(bytes);
    try {
      decoder.push(bytes, final);
    } catch (e) {
      if (e instanceof TooLarge) throw invalidArgument(`the data decompresses to more than the ${maxBytes} bytes the digest declares; nothing was stored`);
      throw corrupt(e);
    }
  };
  for await (const chunk of source) {
    for (let i = 0; i < chunk.byteLength; i += SLICE) {
      push(chunk.subarray(i, Math.min(i + SLICE, chunk.byteLength)), false);
      if (out.length) {
        const ready = out;
        out = [];
        yield* ready;
      }
    }
  }
  if (!complete()) return;
  push(new Uint8Array(0), true);
  yield* out;
}

/** Decompresses bytes already in memory (batch requests), refusing more than `maxBytes` of output. */
export async function zstdDecompress(data: Uint8Array, maxBytes: number): Promise<Uint8Array> {
  // Gathered, then joined: memory follows what the data holds, not what the digest claims.
  const blocks: Uint8Array[] = [];
  for await (const block of zstdDecode([data], maxBytes)) blocks.push(block);
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.byteLength, 0));
  blocks.reduce((at, b) => (out.set(b, at), at + b.byteLength), 0);
  return out;
}
