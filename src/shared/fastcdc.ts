// FastCDC 2020 content-defined chunking (Xia et al., 2020), the chunking REAPI names for
// SplitBlob/SpliceBlob (ChunkingFunction.FAST_CDC_2020): normalization level 2, min = avg / 4,
// max = avg * 4, the GEAR table of the reference implementations and the seed XORed into it.
// Platform-free: the worker splits blobs with it, and the bridge can cut the same chunks, so the
// chunks of similar blobs are shared whoever cut them.
//
// The paper rolls the 64-bit Gear hash two bytes per step (section 3.7); that finds exactly the
// cut points of rolling one byte per step and testing the mask after each byte, which is what this
// does, in two uint32 halves (BigInt per byte is ~50x slower). Chunk boundaries depend only on
// the bytes since the previous boundary, so an insertion moves the boundaries near it and no others.
import { GEAR_HI, GEAR_LO } from "./fastcdc-gear.ts";

/** Masks by log2 of the chunk size, from the C reference implementation (as `[high, low]` halves). */
const MASKS: readonly (readonly [number, number])[] = [
  [0, 0], [0, 0], [0, 0], [0, 0], [0, 0],
  [0x00000000, 0x01804110], // 5
  [0x00000000, 0x01803110], // 64 B
  [0x00000000, 0x18035100], // 128 B
  [0x00000018, 0x00035300], // 256 B
  [0x00000190, 0x00353000], // 512 B
  [0x00005900, 0x03530000], // 1 KiB
  [0x0000d900, 0x03530000], // 2 KiB
  [0x0000d901, 0x03530000], // 4 KiB
  [0x0000d903, 0x03530000], // 8 KiB
  [0x0000d903, 0x13530000], // 16 KiB
  [0x0000d90f, 0x03530000], // 32 KiB
  [0x0000d903, 0x03537000], // 64 KiB
  [0x0000d907, 0x03537000], // 128 KiB
  [0x0000d907, 0x07537000], // 256 KiB
  [0x0000d917, 0x07537000], // 512 KiB
  [0x0000d917, 0x47537000], // 1 MiB
  [0x0000d917, 0x67537000], // 2 MiB
  [0x0000d937, 0x67537000], // 4 MiB
  [0x0000d937, 0x77537000], // 8 MiB
  [0x0000d937, 0x77577000], // 16 MiB
  [0x0000db37, 0x77577000], // 25
];

const NORMALIZATION = 2;

export interface FastCdcParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
  /** XORed into every GEAR entry; 0 is REAPI's recommendation. */
  seed: number;
}

/** REAPI's recommended average chunk size. */
export const DEFAULT_AVG_CHUNK_SIZE = 512 * 1024;

/** The parameters REAPI derives from an advertised FastCdc2020Params (avg in 1 KiB..1 MiB). */
export function fastCdc2020Params(avgSize: number, seed = 0): FastCdcParams {
  if (!Number.isInteger(avgSize) || avgSize < 1024 || avgSize > 1024 * 1024) {
    throw new RangeError(`avg_chunk_size_bytes ${avgSize} is outside 1 KiB..1 MiB`);
  }
  return { minSize: Math.floor(avgSize / 4), avgSize, maxSize: avgSize * 4, seed };
}

export class FastCdc {
  readonly params: FastCdcParams;
  private readonly gearHi: Uint32Array;
  private readonly gearLo: Uint32Array;
  private readonly smallHi: number;
  private readonly smallLo: number;
  private readonly largeHi: number;
  private readonly largeLo: number;

  constructor(params: FastCdcParams) {
    const { minSize, avgSize, maxSize } = params;
    if (!(minSize >= 64 && minSize <= avgSize && avgSize <= maxSize)) {
      throw new RangeError(`FastCDC sizes must satisfy 64 <= min <= avg <= max (got ${minSize}, ${avgSize}, ${maxSize})`);
    }
    const bits = Math.round(Math.log2(avgSize));
    if (bits - NORMALIZATION < 5 || bits + NORMALIZATION > 25) throw new RangeError(`average chunk size ${avgSize} has no masks`);
    this.params = params;
    [this.smallHi, this.smallLo] = MASKS[bits + NORMALIZATION]!;
    [this.largeHi, this.largeLo] = MASKS[bits - NORMALIZATION]!;
    this.gearHi = GEAR_HI;
    this.gearLo = GEAR_LO.map((g) => g ^ params.seed);
  }

  /**
   * The length of the chunk that starts at data[start]. `end` is the end of the stream, or at
   * least maxSize bytes past start (a cut never looks further).
   */
  cut(data: Uint8Array, start: number, end: number): number {
    const { minSize, avgSize, maxSize } = this.params;
    const remaining = end - start;
    if (remaining <= minSize) return remaining;
    const maxBoundary = Math.min(remaining, maxSize);
    // The two-bytes-per-step loops stop at even offsets; so does this, to cut at the same places.
    const normalizeAt = Math.min(avgSize, maxBoundary) & ~1;
    const scanEnd = maxBoundary & ~1;
    const gHi = this.gearHi;
    const gLo = this.gearLo;
    let hi = 0;
    let lo = 0;
    let i = minSize & ~1;
    // Below the average size a mask with more bits (harder to match), above it one with fewer.
    for (let mHi = this.smallHi, mLo = this.smallLo, stop = normalizeAt; ; mHi = this.largeHi, mLo = this.largeLo, stop = scanEnd) {
      for (; i < stop; i++) {
        const b = data[start + i]!;
        const l = ((lo << 1) >>> 0) + gLo[b]!;
        hi = (((hi << 1) | (lo >>> 31)) + gHi[b]! + (l > 0xffffffff ? 1 : 0)) | 0;
        lo = l >>> 0;
        if ((lo & mLo) === 0 && (hi & mHi) === 0) return i;
      }
      if (stop === scanEnd) return maxBoundary;
    }
  }
}

/**
 * Cuts a byte stream into chunks without holding more than about two maximum-size chunks.
 * Each chunk yielded is a fresh copy, the caller's to keep.
 */
export async function* chunkStream(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, cdc: FastCdc): AsyncGenerator<Uint8Array> {
  const max = cdc.params.maxSize;
  const buf = new Uint8Array(2 * max);
  let pos = 0;
  let fill = 0;
  for await (const piece of source) {
    let taken = 0;
    while (taken < piece.byteLength) {
      if (fill === buf.byteLength) {
        buf.copyWithin(0, pos, fill);
        fill -= pos;
        pos = 0;
      }
      const n = Math.min(piece.byteLength - taken, buf.byteLength - fill);
      buf.set(piece.subarray(taken, taken + n), fill);
      fill += n;
      taken += n;
      while (fill - pos >= max) {
        const len = cdc.cut(buf, pos, fill);
        yield buf.slice(pos, pos + len);
        pos += len;
      }
    }
  }
  while (pos < fill) {
    const len = cdc.cut(buf, pos, fill);
    yield buf.slice(pos, pos + len);
    pos += len;
  }
}

/** When a client moves blobs as chunks: those over `above` bytes, cut with `cdc`. */
export interface ChunkPlan {
  above: number;
  cdc: FastCdc;
}

/**
 * The chunking a client of this server should do, from its CacheCapabilities: blobs over
 * max_cas_blob_size_bytes (the most one request carries) go up as chunks and SpliceBlob, cut with
 * the server's FastCDC parameters so the chunks are the ones SplitBlob makes. null: no limit, or
 * the server cannot splice. `above` overrides the limit (0: never chunk).
 */
export function chunkPlanOf(
  caps: { maxCasBlobSize: number; splitAndSplice: boolean; avgChunkSize: number; seed: number },
  above?: number,
): ChunkPlan | null {
  if (above === 0 || !caps.splitAndSplice) return null;
  const avg = caps.avgChunkSize >= 1024 && caps.avgChunkSize <= 1024 * 1024 ? caps.avgChunkSize : DEFAULT_AVG_CHUNK_SIZE;
  const cdc = new FastCdc(fastCdc2020Params(avg, caps.seed));
  if (above !== undefined) return { above, cdc };
  return caps.maxCasBlobSize > 0 ? { above: caps.maxCasBlobSize, cdc } : null;
}
