// rechunk: the pieces a streamed read sends as messages. R2's bodies take the BYOB path (whole
// pieces in one readAtLeast); a plain stream of odd chunks takes the gathering path. Both must give
// the same pieces, the bytes in order, and no buffer larger than what is left of a known length.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { rechunk } from "../../src/storage/rechunk.ts";
import { pseudoRandom } from "./helpers.ts";

const MAX = 64 * 1024;

async function pieces(body: ReadableStream<Uint8Array>, length?: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const p of rechunk(body, MAX, length)) out.push(p);
  return out;
}

const joined = (ps: Uint8Array[]) => {
  const all = new Uint8Array(ps.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of ps) all.set(p, (at += p.byteLength) - p.byteLength);
  return all;
};

/** A stream of `data` cut at odd places, without BYOB support. */
function oddChunks(data: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  let i = 0;
  return new ReadableStream({
    pull(ctl) {
      if (at >= data.byteLength) return ctl.close();
      const n = [1, 4093, 70_000, 17, 65_536][i++ % 5]!;
      ctl.enqueue(data.slice(at, at + n));
      at += n;
    },
  });
}

describe("rechunk", () => {
  for (const size of [0, 1, MAX - 1, MAX, MAX + 1, 3 * MAX + 12_345]) {
    it(`cuts ${size} bytes into whole pieces, from R2 and from a plain stream`, async () => {
      const data = pseudoRandom(size, size + 7);
      await env.CAS.put(`rechunk-${size}`, data);
      const want = Array.from({ length: Math.ceil(size / MAX) }, (_, i) => Math.min(MAX, size - i * MAX));
      for (const length of [size, undefined]) {
        const fromR2 = await pieces((await env.CAS.get(`rechunk-${size}`))!.body, length);
        const fromPlain = await pieces(oddChunks(data), length);
        for (const ps of [fromR2, fromPlain]) {
          expect(ps.map((p) => p.byteLength)).toEqual(want);
          expect(joined(ps)).toEqual(data);
        }
        // A known length bounds every buffer: a small blob is not read into a MAX-byte buffer.
        if (length !== undefined) for (const p of [...fromR2, ...fromPlain]) expect(p.buffer.byteLength).toBeLessThanOrEqual(Math.max(1, Math.min(MAX, size)));
      }
    });
  }

  it("a body that ends before its known length is an error after the bytes it had, never a short success", async () => {
    const data = pseudoRandom(MAX + 10, 14);
    await env.CAS.put("rechunk-short", data);
    for (const body of [(await env.CAS.get("rechunk-short"))!.body, oddChunks(data)]) {
      const out: Uint8Array[] = [];
      const err = await (async () => {
        for await (const p of rechunk(body, MAX, data.byteLength + 100)) out.push(p);
      })().then(() => null, (e: Error) => e);
      expect(err?.message).toMatch(/ended 100 short of the 65646 to read/);
      expect(joined(out)).toEqual(data);
    }
  });

  it("leaves `room` free bytes in front of every piece, in a buffer of its own", async () => {
    const data = pseudoRandom(2 * MAX + 3, 12);
    await env.CAS.put("rechunk-room", data);
    for (const body of [(await env.CAS.get("rechunk-room"))!.body, oddChunks(data)]) {
      const out: Uint8Array[] = [];
      for await (const p of rechunk(body, MAX, data.byteLength, 9)) out.push(p);
      expect(out.map((p) => [p.byteOffset, p.buffer.byteLength])).toEqual([[9, 9 + MAX], [9, 9 + MAX], [9, 9 + 3]]);
      expect(joined(out)).toEqual(data);
    }
  });

  it("cancels the body when its reader stops early, from R2 and from a plain stream", async () => {
    const data = pseudoRandom(4 * MAX, 13);
    await env.CAS.put("rechunk-stop", data);
    for (const body of [(await env.CAS.get("rechunk-stop"))!.body, oddChunks(data)]) {
      for await (const p of rechunk(body, MAX, data.byteLength)) {
        expect(p.byteLength).toBe(MAX);
        break;
      }
      // A cancelled stream reads as ended; one only let go of would still hold three pieces.
      expect((await body.getReader().read()).done).toBe(true);
    }
  });

  it("reads an R2 body in whole pieces, not in the store's chunks", async () => {
    const data = pseudoRandom(8 * MAX, 11);
    await env.CAS.put("rechunk-r2-pieces", data);
    let reads = 0;
    const body = (await env.CAS.get("rechunk-r2-pieces"))!.body;
    const plainChunks = await (async () => {
      for await (const _ of (await env.CAS.get("rechunk-r2-pieces"))!.body) reads++;
      return reads;
    })();
    const ps = await pieces(body, data.byteLength);
    expect(ps).toHaveLength(8);
    expect(joined(ps)).toEqual(data);
    // What the BYOB path saves: the store hands the same object out in more, smaller chunks.
    expect(plainChunks).toBeGreaterThan(8);
  });
});
