// The FastCDC 2020 chunker (src/shared/fastcdc.ts) against the definitions it implements: the GEAR
// table re-derived with MD5, cut points against the paper's two-bytes-per-step loop in 64-bit
// BigInt arithmetic, and the property content-defined chunking exists for.
import { describe, expect, it } from "vitest";
import { GEAR_HI, GEAR_LO } from "../../src/shared/fastcdc-gear.ts";
import { FastCdc, chunkStream, fastCdc2020Params, type FastCdcParams } from "../../src/shared/fastcdc.ts";
import { pseudoRandom, sha256Hex } from "./helpers.ts";

const M64 = (1n << 64n) - 1n;
const gear = (i: number, seed: number) => ((BigInt(GEAR_HI[i]!) << 32n) | BigInt((GEAR_LO[i]! ^ seed) >>> 0));
// Masks as the C reference lists them (log2 of the size -> mask), for the levels used below.
const REFERENCE_MASKS: Record<number, bigint> = {
  8: 0x0000001800035300n, 9: 0x0000019000353000n, 10: 0x0000590003530000n, 11: 0x0000d90003530000n,
  12: 0x0000d90103530000n, 14: 0x0000d90313530000n, 17: 0x0000d90703537000n, 21: 0x0000d91767537000n,
};

/** The paper's cut (section 3.7): two bytes per step with the left-shifted table, in BigInt. */
function referenceCut(src: Uint8Array, p: FastCdcParams): number {
  let remaining = src.length;
  if (remaining <= p.minSize) return remaining;
  let center = p.avgSize;
  if (remaining > p.maxSize) remaining = p.maxSize;
  else if (remaining < center) center = remaining;
  const bits = Math.round(Math.log2(p.avgSize));
  const ms = REFERENCE_MASKS[bits + 2]!;
  const ml = REFERENCE_MASKS[bits - 2]!;
  let h = 0n;
  let index = Math.floor(p.minSize / 2);
  const step = (mask: bigint): number | undefined => {
    const a = index * 2;
    h = ((h << 2n) + ((gear(src[a]!, p.seed) << 1n) & M64)) & M64;
    if ((h & ((mask << 1n) & M64)) === 0n) return a;
    h = (h + gear(src[a + 1]!, p.seed)) & M64;
    if ((h & mask) === 0n) return a + 1;
    index++;
    return undefined;
  };
  while (index < Math.floor(center / 2)) {
    const c = step(ms);
    if (c !== undefined) return c;
  }
  while (index < Math.floor(remaining / 2)) {
    const c = step(ml);
    if (c !== undefined) return c;
  }
  return remaining;
}

function cutAll(data: Uint8Array, cdc: FastCdc): number[] {
  const out: number[] = [];
  for (let pos = 0; pos < data.length; ) {
    const n = cdc.cut(data, pos, data.length);
    out.push(n);
    pos += n;
  }
  return out;
}

async function* pieces(data: Uint8Array, size: number) {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function streamed(data: Uint8Array, cdc: FastCdc, pieceSize: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of chunkStream(pieces(data, pieceSize), cdc)) out.push(c);
  return out;
}

const hashes = (chunks: Uint8Array[]) => Promise.all(chunks.map((c) => sha256Hex(c)));

describe("FastCDC 2020", () => {
  it("GEAR[i] is the high 64 bits of MD5 of 64 bytes of i", async () => {
    for (let i = 0; i < 256; i++) {
      const md5 = new DataView(await crypto.subtle.digest("MD5", new Uint8Array(64).fill(i)));
      expect([GEAR_HI[i], GEAR_LO[i]]).toEqual([md5.getUint32(0), md5.getUint32(4)]);
    }
  });

  it("cuts where the paper's two-bytes-per-step loop cuts (several sizes, seeds, odd lengths)", () => {
    const cases: FastCdcParams[] = [
      { minSize: 256, avgSize: 1024, maxSize: 4096, seed: 0 },
      { minSize: 257, avgSize: 1024, maxSize: 4095, seed: 0 },
      { minSize: 256, avgSize: 1024, maxSize: 4096, seed: 666 },
      { minSize: 1024, avgSize: 4096, maxSize: 16384, seed: 0xdeadbeef },
    ];
    let compared = 0;
    for (const p of cases) {
      const cdc = new FastCdc(p);
      for (const [len, seed] of [[50_001, 3], [50_000, 4], [p.minSize + 1, 5], [p.maxSize * 3 + 7, 6]] as const) {
        const data = pseudoRandom(len, seed);
        for (let pos = 0; pos < data.length; ) {
          const want = referenceCut(data.subarray(pos), p);
          expect(cdc.cut(data, pos, data.length)).toBe(want);
          pos += want;
          compared++;
        }
      }
    }
    expect(compared).toBeGreaterThan(60);
  });

  it("a run of identical bytes (no boundary) is cut at the maximum size", () => {
    const p = fastCdc2020Params(1024);
    expect(cutAll(new Uint8Array(10_000), new FastCdc(p))).toEqual([4096, 4096, 1808]);
  });

  it("streams chunks of min..max bytes that concatenate to the input, however the input arrives", async () => {
    const p = fastCdc2020Params(16 * 1024);
    const cdc = new FastCdc(p);
    const data = pseudoRandom(3 * 1024 * 1024 + 13, 7);
    const whole = await streamed(data, cdc, data.length);
    expect(whole.map((c) => c.length)).toEqual(cutAll(data, cdc));
    for (const pieceSize of [1, 4093, 65536, 300_000]) {
      if (pieceSize === 1) {
        const small = data.subarray(0, 200_000);
        expect((await streamed(small, cdc, 1)).map((c) => c.length)).toEqual(cutAll(small, cdc));
        continue;
      }
      expect((await streamed(data, cdc, pieceSize)).map((c) => c.length)).toEqual(whole.map((c) => c.length));
    }
    expect(whole.length).toBeGreaterThan(100);
    whole.slice(0, -1).forEach((c) => {
      expect(c.length).toBeGreaterThanOrEqual(p.minSize);
      expect(c.length).toBeLessThanOrEqual(p.maxSize);
    });
    const joined = new Uint8Array(data.length);
    let off = 0;
    for (const c of whole) joined.set(c, (off += c.length) - c.length);
    expect(off).toBe(data.length);
    expect(await sha256Hex(joined)).toBe(await sha256Hex(data));
  });

  it("boundaries are stable under an insertion: only the chunks around it change", async () => {
    const cdc = new FastCdc(fastCdc2020Params(16 * 1024));
    const data = pseudoRandom(2 * 1024 * 1024, 11);
    const at = 1_000_003;
    const inserted = new Uint8Array(data.length + 100);
    inserted.set(data.subarray(0, at));
    inserted.set(pseudoRandom(100, 99), at);
    inserted.set(data.subarray(at), at + 100);
    const before = await hashes(await streamed(data, cdc, 65536));
    const after = await hashes(await streamed(inserted, cdc, 65536));
    const shared = after.filter((h) => before.includes(h)).length;
    // The chunk holding the insertion differs, and perhaps one beside it; every other is shared.
    expect(before.length).toBeGreaterThan(60);
    expect(shared).toBeGreaterThanOrEqual(before.length - 3);
    expect(after.slice(0, 10)).toEqual(before.slice(0, 10));
    expect(after.slice(-10)).toEqual(before.slice(-10));
  });

  it("the seed moves the boundaries", () => {
    const data = pseudoRandom(200_000, 21);
    expect(cutAll(data, new FastCdc(fastCdc2020Params(1024, 1)))).not.toEqual(cutAll(data, new FastCdc(fastCdc2020Params(1024, 0))));
  });

  it("refuses parameters REAPI does not allow", () => {
    expect(() => fastCdc2020Params(512)).toThrow(/1 KiB/);
    expect(() => fastCdc2020Params(2 * 1024 * 1024)).toThrow(/1 MiB/);
    expect(fastCdc2020Params(512 * 1024)).toEqual({ minSize: 128 * 1024, avgSize: 512 * 1024, maxSize: 2 * 1024 * 1024, seed: 0 });
  });
});
