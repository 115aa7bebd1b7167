// FastCDC 2020 content-defined chunking (Xia et al., 2020), the chunking REAPI names for
// SplitBlob/SpliceBlob (ChunkingFunction.FAST_CDC_2020): normalization level 2, min = avg / 4,
// max = avg * 4, the GEAR table of the reference implementations and the seed XORed into it.
// Platform-free: the worker splits blobs with it, and the bridge can cut the same chunks, so the
// chunks of similar blobs are shared whoever cut them.
//
// The paper rolls the 64-bit Gear hash two bytes per step (section 3.7); that finds exactly the
// cut points of rolling one byte per step and testing the mask after each byte, which is what this
// does, on the low 48 bits in two 24-bit halves (BigInt per byte is ~50x slower). Chunk boundaries depend only on
// the bytes since the previous boundary, so an insertion moves the boundaries near it and no others.
import { GEAR_HI, GEAR_LO } from "./fastcdc-gear.ts";

/** Masks by log2 of the chunk size, from the C reference implementation. */
const MASKS: readonly bigint[] = [
  0n, 0n, 0n, 0n, 0n,
  0x0000000001804110n, // 5
  0x0000000001803110n, // 64 B
  0x0000000018035100n, // 128 B
  0x0000001800035300n, // 256 B
  0x0000019000353000n, // 512 B
  0x0000590003530000n, // 1 KiB
  0x0000d90003530000n, // 2 KiB
  0x0000d90103530000n, // 4 KiB
  0x0000d90303530000n, // 8 KiB
  0x0000d90313530000n, // 16 KiB
  0x0000d90f03530000n, // 32 KiB
  0x0000d90303537000n, // 64 KiB
  0x0000d90703537000n, // 128 KiB
  0x0000d90707537000n, // 256 KiB
  0x0000d91707537000n, // 512 KiB
  0x0000d91747537000n, // 1 MiB
  0x0000d91767537000n, // 2 MiB
  0x0000d93767537000n, // 4 MiB
  0x0000d93777537000n, // 8 MiB
  0x0000d93777577000n, // 16 MiB
  0x0000db3777577000n, // 25
];

/**
 * Every mask lies within the low 48 bits, and the low 48 bits of the Gear hash depend only on the
 * low 48 bits of the table (the hash only shifts left and adds), so the hash is rolled mod 2^48 in
 * two 24-bit halves: small integers V8 keeps unboxed (uint32 halves were 10x slower here).
 */
const HALF = 24;
const HALF_MASK = (1 << HALF) - 1;
const halves = (x: bigint): [number, number] => [Number((x >> BigInt(HALF)) & BigInt(HALF_MASK)), Number(x & BigInt(HALF_MASK))];

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
  private readonly gearHi: Int32Array;
  private readonly gearLo: Int32Array;
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
    [this.smallHi, this.smallLo] = halves(MASKS[bits + NORMALIZATION]!);
    [this.largeHi, this.largeLo] = halves(MASKS[bits - NORMALIZATION]!);
    this.gearHi = new Int32Array(256);
    this.gearLo = new Int32Array(256);
    for (let i = 0; i < 256; i++) {
      // The seed is XORed into each 64-bit entry (a uint32: its low half).
      const g = (BigInt(GEAR_HI[i]!) << 32n) | BigInt((GEAR_LO[i]! ^ params.seed) >>> 0);
      [this.gearHi[i], this.gearLo[i]] = halves(g);
    }
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
        lo = (lo << 1) + gLo[b]!;
        hi = ((hi << 1) + gHi[b]! + (lo >> HALF)) & HALF_MASK;
        lo &= HALF_MASK;
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
