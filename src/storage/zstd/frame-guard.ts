// Follows the frames of a zstd stream (RFC 8878 §3.1) as it arrives, to refuse a frame whose
// window is larger than this server decodes before the decoder allocates it: the window is the
// decoder's memory, and a frame header may ask for up to 2 GiB (or, in a single-segment frame,
// the whole content size); and to refuse a block over the format's 128 KiB maximum, which fzstd
// does not check (a 4-byte RLE block could otherwise stand for 2 MiB of output). Only headers are
// read; block contents are skipped by their sizes. Anything else malformed is left to the
// decoder, which says what is wrong.
import { invalidArgument } from "../../shared/status.ts";

/**
 * Largest window decoded: zstd levels up to 19 without --long stay within it (Bazel compresses
 * at level 3: 2 MiB). Each decode in flight holds its window, and an isolate has 128 MB.
 */
export const MAX_WINDOW = 8 * 1024 * 1024;

/** Block_Maximum_Size (RFC 8878 §3.1.1.2.3): min(window, 128 KiB). */
const MAX_BLOCK = 128 * 1024;

const ZSTD_MAGIC = 0xfd2fb528;
const isSkippable = (magic: number) => (magic & 0xfffffff0) === 0x184d2a50;

type State = "frame" | "block" | "lost";

export class FrameGuard {
  private state: State = "frame";
  /** Header bytes gathered so far (frame or block header). */
  private head: number[] = [];
  /** Bytes to pass over before the next header. */
  private skip = 0;
  private checksum = false;
  private window = 0;

  /** Reads `bytes` (the next of the stream); throws INVALID_ARGUMENT for a frame whose window is too large. */
  check(bytes: Uint8Array): void {
    let i = 0;
    while (i < bytes.byteLength && this.state !== "lost") {
      if (this.skip > 0) {
        const n = Math.min(this.skip, bytes.byteLength - i);
        this.skip -= n;
        i += n;
        continue;
      }
      this.head.push(bytes[i++]!);
      if (this.state === "frame") this.frameHeader();
      else this.blockHeader();
    }
  }

  private frameHeader() {
    const h = this.head;
    if (h.length < 4) return;
    const magic = (h[0]! | (h[1]! << 8) | (h[2]! << 16) | (h[3]! << 24)) >>> 0;
    if (isSkippable(magic)) {
      if (h.length < 8) return;
      this.skip = (h[4]! | (h[5]! << 8) | (h[6]! << 16) | (h[7]! << 24)) >>> 0;
      this.head = [];
      return;
    }
    if (magic !== ZSTD_MAGIC) return void (this.state = "lost");
    if (h.length < 5) return;
    const fhd = h[4]!;
    const single = (fhd >> 5) & 1;
    const fcsFlag = fhd >> 6;
    const dictBytes = [0, 1, 2, 4][fhd & 3]!;
    const fcsBytes = [single, 2, 4, 8][fcsFlag]!;
    const length = 5 + (single ? 0 : 1) + dictBytes + fcsBytes;
    if (h.length < length) return;
    let window: number;
    if (single) {
      // The window is the content size (little-endian, 1, 2, 4 or 8 bytes; 2-byte sizes are offset by 256).
      const at = 5 + dictBytes;
      window = 0;
      for (let k = fcsBytes - 1; k >= 0; k--) window = window * 256 + h[at + k]!;
      if (fcsFlag === 1) window += 256;
    } else {
      const wd = h[5]!;
      const base = 2 ** (10 + (wd >> 3));
      window = base + (base / 8) * (wd & 7);
    }
    if (window > MAX_WINDOW) {
      throw invalidArgument(
        `a zstd frame asks for a ${window}-byte window, over the ${MAX_WINDOW} bytes this server decodes (compress at level 19 or below, without --long); nothing was stored`,
      );
    }
    this.checksum = ((fhd >> 2) & 1) === 1;
    this.window = window;
    this.head = [];
    this.state = "block";
  }

  private blockHeader() {
    const h = this.head;
    if (h.length < 3) return;
    const b = h[0]! | (h[1]! << 8) | (h[2]! << 16);
    const last = b & 1;
    const type = (b >> 1) & 3;
    const size = b >>> 3;
    this.head = [];
    if (type === 3) return void (this.state = "lost");
    const max = Math.min(this.window, MAX_BLOCK);
    if (size > max) {
      throw invalidArgument(`the data is not a valid zstd stream (a ${size}-byte block, over the ${max}-byte maximum); nothing was stored`);
    }
    // Raw and compressed blocks carry `size` bytes; an RLE block carries one.
    this.skip = type === 1 ? 1 : size;
    if (last) {
      this.skip += this.checksum ? 4 : 0;
      this.state = "frame";
    }
  }
}
