// zstd on every compressed path: ByteStream compressed-blobs (write, resumed write, read), batches,
// the blob HTTP surface and Capabilities; corrupt or mismatching data is refused and never stored.
// Uploads are compressed here with the reference C library (the worker's own WebAssembly build);
// downloads are decoded with fzstd, an independent decoder.
import { Code } from "@connectrpc/connect";
import { SELF, env } from "cloudflare:test";
import { decompress } from "fzstd";
import { describe, expect, it } from "vitest";
import { Capabilities, Compressor_Value, ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { PART_SIZE } from "../../src/storage/upload.ts";
import { zstdCompress } from "../../src/storage/zstd/encoder.ts";
import { MAX_COMPRESSION_RATIO } from "../../src/services/limits.ts";
import { casHolds, codeOf, connectClient, digestOf, errorOf, grpcWebClient, pseudoRandom, sha256Hex } from "./helpers.ts";

const bs = grpcWebClient(ByteStream);
const cas = connectClient(ContentAddressableStorage);

/** Text-like bytes that compress about 3:1 (pseudo-random words), deterministic per seed. */
function compressible(size: number, seed: number): Uint8Array {
  const noise = pseudoRandom(size, seed);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = 97 + (noise[i]! % 8 === 0 ? noise[i]! % 26 : i % 13);
  return out;
}

/** The messages of a compressed Write: offsets are the first offset plus the compressed bytes before. */
async function* compressedWrite(resourceName: string, zstd: Uint8Array, firstOffset: number, chunk: number, finish = true) {
  for (let at = 0; at < zstd.byteLength || at === 0; at += chunk) {
    const end = Math.min(at + chunk, zstd.byteLength);
    yield { resourceName: at === 0 ? resourceName : "", writeOffset: BigInt(firstOffset + at), data: zstd.subarray(at, end), finishWrite: finish && end === zstd.byteLength };
    if (end === zstd.byteLength) return;
  }
}

async function readAll(resourceName: string, readOffset = 0n, readLimit = 0n) {
  const parts: Uint8Array[] = [];
  for await (const r of bs.read({ resourceName, readOffset, readLimit })) parts.push(r.data);
  return new Uint8Array(await new Blob(parts).arrayBuffer());
}

const stored = (hash: string) => casHolds(hash);

describe("Capabilities", () => {
  it("advertises zstd for ByteStream and batch updates", async () => {
    const caps = await connectClient(Capabilities).getCapabilities({});
    expect(caps.cacheCapabilities?.supportedCompressors).toEqual([Compressor_Value.ZSTD]);
    expect(caps.cacheCapabilities?.supportedBatchUpdateCompressors).toEqual([Compressor_Value.ZSTD]);
  });
});

describe("ByteStream compressed-blobs/zstd", () => {
  it("a blob over max_cas_blob_size_bytes that compresses under the edge's body cap goes up whole; uncompressed it is refused", async () => {
    const saved = env.MAX_REQUEST_BODY_BYTES;
    env.MAX_REQUEST_BODY_BYTES = "2000000"; // max_cas_blob_size_bytes: 2,000,000 less 1 MiB
    try {
      const data = new Uint8Array(5 * 1024 * 1024).fill(7);
      data.set(pseudoRandom(64, (Math.random() * 2 ** 31) | 0));
      const d = await digestOf(data);
      const zstd = await zstdCompress(data);
      expect(zstd.byteLength).toBeLessThan(100_000);
      const w = await bs.write(compressedWrite(`z/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`, zstd, 0, 64 * 1024));
      expect(w.committedSize).toBe(BigInt(zstd.byteLength));
      expect(await sha256Hex(await readAll(`z/blobs/${d.hash}/${d.sizeBytes}`))).toBe(d.hash);
      const other = data.slice();
      other[100] = 1;
      const o = await digestOf(other);
      const plain = (async function* () {
        yield { resourceName: `z/uploads/${crypto.randomUUID()}/blobs/${o.hash}/${o.sizeBytes}`, writeOffset: 0n, data: other, finishWrite: true };
      })();
      expect(await codeOf(bs.write(plain))).toBe(Code.InvalidArgument);
      // Compressed, a blob may inflate to MAX_COMPRESSION_RATIO x max_cas_blob_size_bytes, no more:
      // a few bytes of zstd could otherwise declare any size.
      const huge = { hash: "e".repeat(64), size: (2_000_000 - 1024 * 1024) * MAX_COMPRESSION_RATIO + 1 };
      const bomb = (async function* () {
        yield { resourceName: `z/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${huge.hash}/${huge.size}`, writeOffset: 0n, data: zstd, finishWrite: true };
      })();
      const e = await errorOf(bs.write(bomb));
      expect([e.code, e.rawMessage]).toEqual([Code.InvalidArgument, expect.stringContaining("SpliceBlob")]);
      // The blob HTTP surface holds a zstd PUT to the same caps as ByteStream.
      const again = data.slice();
      again[200] = 2;
      const a = await digestOf(again);
      const packed = await zstdCompress(again);
      const put = (url: string, headers: Record<string, string> = {}) => SELF.fetch(url, { method: "PUT", body: packed, headers }).then(async (r) => [r.status, await r.text()]);
      expect(await put(`http://kiln/z/uploads/${crypto.randomUUID()}/blobs/${a.hash}/${a.sizeBytes}`, { "content-encoding": "zstd" })).toEqual([200, expect.anything()]);
      expect(await casHolds(a.hash)).toBe(true);
      expect(await put(`http://kiln/z/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${huge.hash}/${huge.size}`)).toEqual([400, expect.stringContaining("SpliceBlob")]);
    } finally {
      env.MAX_REQUEST_BODY_BYTES = saved;
    }
  });

  it("writes a compressed blob, stores it uncompressed and reads it back both ways", async () => {
    const data = compressible(3 * 1024 * 1024 + 77, 1);
    const d = await digestOf(data);
    const zstd = await zstdCompress(data);
    expect(zstd.byteLength).toBeLessThan(data.byteLength / 2);
    const w = await bs.write(compressedWrite(`z/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`, zstd, 0, 64 * 1024));
    // committed_size of a whole compressed Write: where its offsets reached (Bazel checks this).
    expect(w.committedSize).toBe(BigInt(zstd.byteLength));
    expect(await sha256Hex(await readAll(`z/blobs/${d.hash}/${d.sizeBytes}`))).toBe(d.hash);
    const packed = await readAll(`z/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`);
    expect(packed.byteLength).toBeLessThan(data.byteLength / 2);
    expect(await sha256Hex(decompress(packed))).toBe(d.hash);
    // read_offset is in the uncompressed blob; a read_limit is refused for compressed reads.
    expect(decompress(await readAll(`z/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`, 1_500_000n))).toEqual(data.subarray(1_500_000));
    expect(await codeOf(readAll(`z/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`, 0n, 10n))).toBe(Code.InvalidArgument);
    // A blob stored uncompressed is served compressed too; an unknown compressor is refused.
    expect(await codeOf(readAll(`z/compressed-blobs/brotli/${d.hash}/${d.sizeBytes}`))).toBe(Code.InvalidArgument);
    // Stored already: a compressed upload completes at once with committed_size -1.
    const again = await bs.write(compressedWrite(`z/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`, zstd.subarray(0, 100), 0, 100, false));
    expect(again.committedSize).toBe(-1n);
  });

  it("completes a Write whose decoder ends on an empty block (the stream of bytes must not stall)", async () => {
    // 300 KB of noise then 900 KB of one byte: the decoder's last call yields an empty block,
    // which once left the upload waiting forever for bytes that were never coming.
    const data = new Uint8Array(1_200_000);
    data.set(pseudoRandom(300_000, 9));
    data.fill(120, 300_000);
    const d = await digestOf(data);
    const zstd = await zstdCompress(data);
    const w = await bs.write(compressedWrite(`uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`, zstd, 0, 64 * 1024), { timeoutMs: 10_000 });
    expect(w.committedSize).toBe(BigInt(zstd.byteLength));
    expect(await sha256Hex(await readAll(`blobs/${d.hash}/${d.sizeBytes}`))).toBe(d.hash);
  });

  it("checks compressed offsets: each is the first plus the compressed bytes sent before it", async () => {
    const data = compressible(200_000, 2);
    const d = await digestOf(data);
    const zstd = await zstdCompress(data);
    const res = `uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
    async function* uncompressedOffsets() {
      yield { resourceName: res, writeOffset: 0n, data: zstd.subarray(0, 1000) };
      yield { writeOffset: 5000n, data: zstd.subarray(1000), finishWrite: true };
    }
    expect((await errorOf(bs.write(uncompressedOffsets()))).rawMessage).toMatch(/compressed bytes sent/);
    expect(await stored(d.hash)).toBe(false);
  });

  it("refuses a corrupt zstd stream with INVALID_ARGUMENT and stores nothing", async () => {
    const data = compressible(300_000, 3);
    const d = await digestOf(data);
    const zstd = await zstdCompress(data);
    const res = () => `uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
    const garbage = pseudoRandom(50_000, 4);
    const truncated = zstd.subarray(0, zstd.byteLength - 100);
    const flipped = zstd.slice();
    for (let i = 20; i < flipped.byteLength; i += 97) flipped[i] ^= 0x5a;
    for (const bad of [garbage, truncated, flipped]) {
      const e = await errorOf(bs.write(compressedWrite(res(), bad, 0, 16 * 1024)));
      expect(e.code).toBe(Code.InvalidArgument);
      expect(e.rawMessage).toMatch(/zstd|hashes|does not hash|bytes/);
    }
    expect((await errorOf(bs.write(compressedWrite(res(), garbage, 0, 16 * 1024)))).rawMessage).toMatch(/not a valid zstd stream/);
    expect((await errorOf(bs.write(compressedWrite(res(), truncated, 0, 16 * 1024)))).rawMessage).toMatch(/not a valid zstd stream/);
    expect(await stored(d.hash)).toBe(false);
    expect(await codeOf(readAll(`blobs/${d.hash}/${d.sizeBytes}`))).toBe(Code.NotFound);
  });

  it("refuses a frame whose window is over 8 MiB, or a block over 128 KiB, before decoding it", async () => {
    const data = compressible(100_000, 20);
    const d = await digestOf(data);
    const res = () => `uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
    // Frame headers (RFC 8878): magic, descriptor, then a 1 GiB window descriptor, or a
    // single-segment frame whose 8-byte content size (and so window) is 1 GiB; then a raw block.
    const magic = [0x28, 0xb5, 0x2f, 0xfd];
    const block = [0x01 | (4 << 3), 0, 0, 1, 2, 3, 4];
    const hugeWindow = new Uint8Array([...magic, 0x00, 20 << 3, ...block]);
    // zstd -20's window (2^25 bytes; Window_Descriptor exponent 25 - 10): past what is decoded.
    const level20 = new Uint8Array([...magic, 0x00, 15 << 3, ...block]);
    const hugeSingle = new Uint8Array([...magic, 0xe0, 0, 0, 0, 0x40, 0, 0, 0, 0, ...block]);
    const valid = await zstdCompress(data.subarray(0, 50_000));
    const second = new Uint8Array([...valid, ...hugeWindow]);
    for (const bad of [hugeWindow, hugeSingle, second, level20]) {
      const e = await errorOf(bs.write(compressedWrite(res(), bad, 0, 4096)));
      expect(e.code).toBe(Code.InvalidArgument);
      expect(e.rawMessage).toMatch(/window, over the 8388608 bytes/);
    }
    // A block over 128 KiB (here a 4-byte RLE block standing for 1 MiB) is corrupt, whatever its window.
    const rle = (1 << 23) | (1 << 1) | 1;
    const bigBlock = new Uint8Array([...magic, 0x00, 10 << 3, rle & 0xff, (rle >> 8) & 0xff, rle >>> 16, 0x41]);
    expect((await errorOf(bs.write(compressedWrite(res(), bigBlock, 0, 4096)))).rawMessage).toMatch(/1048576-byte block, over the 131072-byte maximum/);
    expect(await stored(d.hash)).toBe(false);
  });

  it("refuses valid zstd whose uncompressed bytes do not match the digest, storing nothing", async () => {
    const data = compressible(300_000, 5);
    const other = compressible(300_000, 6);
    const d = await digestOf(other);
    const e = await errorOf(bs.write(compressedWrite(`uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`, await zstdCompress(data), 0, 32 * 1024)));
    expect(e.code).toBe(Code.InvalidArgument);
    // More bytes than the name declares, once decompressed.
    const small = await digestOf(data.subarray(0, 1000));
    const big = await errorOf(bs.write(compressedWrite(`uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${small.hash}/${small.sizeBytes}`, await zstdCompress(data), 0, 32 * 1024)));
    expect(big.code).toBe(Code.InvalidArgument);
    expect(await stored(d.hash)).toBe(false);
    expect(await stored(small.hash)).toBe(false);
  });

  it("resumes a large compressed upload at the uncompressed committed_size", async () => {
    const size = PART_SIZE + PART_SIZE / 2;
    const data = compressible(size, 7);
    const d = await digestOf(data);
    const res = `ci/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
    // A part and a quarter, compressed, then the client goes away without finish_write.
    const head = await zstdCompress(data.subarray(0, PART_SIZE + PART_SIZE / 4));
    expect((await bs.write(compressedWrite(res, head, 0, 256 * 1024, false))).committedSize).toBe(BigInt(PART_SIZE));
    expect(await bs.queryWriteStatus({ resourceName: res })).toMatchObject({ committedSize: BigInt(PART_SIZE), complete: false });
    expect(await stored(d.hash)).toBe(false);
    // The rest is a new zstd stream of the bytes from committed_size; its first offset is that
    // (uncompressed) size, later ones add the compressed bytes sent.
    const tail = await zstdCompress(data.subarray(PART_SIZE));
    expect(await codeOf(bs.write(compressedWrite(res, tail, 1000, 64 * 1024)))).toBe(Code.InvalidArgument);
    expect((await bs.write(compressedWrite(res, tail, PART_SIZE, 64 * 1024))).committedSize).toBe(BigInt(PART_SIZE + tail.byteLength));
    expect(await sha256Hex(await readAll(`ci/blobs/${d.hash}/${d.sizeBytes}`))).toBe(d.hash);
  });
});

describe("large compressed Writes (multipart)", () => {
  it("are decoded to the end: a frame with bytes past the declared size is refused, nothing stored", async () => {
    const size = PART_SIZE + 1000;
    const data = compressible(size, 8);
    const d = await digestOf(data);
    // The blob's frame, then a second frame of one more byte (zstd streams may hold several frames).
    const zstd = new Uint8Array(await new Blob([await zstdCompress(data), await zstdCompress(new Uint8Array([97]))]).arrayBuffer());
    const res = `ci/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
    const err = await errorOf(bs.write(compressedWrite(res, zstd, 0, 256 * 1024)));
    expect([err.code, err.rawMessage]).toEqual([Code.InvalidArgument, `the data decompresses to more than the ${size} bytes the digest declares; nothing was stored`]);
    expect(await stored(d.hash)).toBe(false);
    // The blob's frame alone is stored.
    const alone = await zstdCompress(data);
    const ok = `ci/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
    expect((await bs.write(compressedWrite(ok, alone, 0, 256 * 1024))).committedSize).toBe(BigInt(alone.byteLength));
    expect(await stored(d.hash)).toBe(true);
  });

  it("refuses a message after finish_write; every byte without finish_write leaves the upload unfinished, answered in uncompressed bytes", async () => {
    const size = PART_SIZE + 2000;
    const data = compressible(size, 9);
    const d = await digestOf(data);
    const zstd = await zstdCompress(data);
    const name = () => `ci/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
    const res = name();
    async function* afterFinish() {
      yield* compressedWrite(res, zstd, 0, 256 * 1024);
      yield { writeOffset: BigInt(zstd.byteLength), data: new Uint8Array() };
    }
    const err = await errorOf(bs.write(afterFinish()));
    expect([err.code, err.rawMessage]).toEqual([Code.InvalidArgument, "a message after finish_write"]);
    expect(await stored(d.hash)).toBe(false);
    // Every compressed byte, no finish_write: committed_size is the uncompressed bytes committed
    // (as QueryWriteStatus says), not the compressed length a finished Write answers.
    const open = name();
    expect((await bs.write(compressedWrite(open, zstd, 0, 256 * 1024, false))).committedSize).toBe(d.sizeBytes);
    expect(await bs.queryWriteStatus({ resourceName: open })).toMatchObject({ committedSize: d.sizeBytes, complete: false });
    expect(await stored(d.hash)).toBe(false);
  });
});

describe("batches with zstd", () => {
  it("BatchUpdateBlobs takes zstd blobs, verified on the uncompressed bytes, each on its own", async () => {
    const good = compressible(100_000, 8);
    const bad = compressible(100_000, 9);
    const dGood = await digestOf(good);
    const dBad = await digestOf(compressible(100_000, 10));
    const dCorrupt = await digestOf(compressible(1000, 11));
    const res = await cas.batchUpdateBlobs({
      requests: [
        { digest: dGood, data: await zstdCompress(good), compressor: Compressor_Value.ZSTD },
        { digest: dBad, data: await zstdCompress(bad), compressor: Compressor_Value.ZSTD },
        { digest: dCorrupt, data: pseudoRandom(500, 12), compressor: Compressor_Value.ZSTD },
        { digest: dCorrupt, data: pseudoRandom(500, 12), compressor: Compressor_Value.BROTLI },
      ],
    });
    expect(res.responses.map((r) => r.status?.code)).toEqual([0, Code.InvalidArgument, Code.InvalidArgument, Code.InvalidArgument]);
    expect(res.responses[2]!.status?.message).toMatch(/not a valid zstd stream/);
    expect(await stored(dGood.hash)).toBe(true);
    expect(await stored(dBad.hash)).toBe(false);
    expect(await stored(dCorrupt.hash)).toBe(false);
  });

  it("bounds the batch's declared uncompressed bytes however the sizes are written", async () => {
    const data = compressible(1000, 30);
    const d = await digestOf(data);
    const zstd = await zstdCompress(data);
    // A negative size (refused on its own) must not offset another entry's 200 MiB.
    const e = await errorOf(
      cas.batchUpdateBlobs({
        requests: [
          { digest: { hash: "a".repeat(64), sizeBytes: -(2n ** 62n) }, data: new Uint8Array(0), compressor: Compressor_Value.ZSTD },
          { digest: { hash: d.hash, sizeBytes: 200n << 20n }, data: zstd, compressor: Compressor_Value.ZSTD },
        ],
      }),
    );
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/declare 209715200 bytes, over 67108864/);
    // The negative size alone is that entry's error, not the batch's.
    const alone = await cas.batchUpdateBlobs({
      requests: [
        { digest: { hash: "a".repeat(64), sizeBytes: -1n }, data: new Uint8Array(0), compressor: Compressor_Value.ZSTD },
        { digest: d, data: zstd, compressor: Compressor_Value.ZSTD },
      ],
    });
    expect(alone.responses.map((r) => r.status?.code)).toEqual([Code.InvalidArgument, 0]);
    expect(await stored(d.hash)).toBe(true);
  });

  it("BatchReadBlobs answers zstd only to a client that accepts it, and only where it is smaller", async () => {
    const text = compressible(50_000, 13);
    const noise = pseudoRandom(50_000, 14);
    const dText = await digestOf(text);
    const dNoise = await digestOf(noise);
    await cas.batchUpdateBlobs({ requests: [{ digest: dText, data: text }, { digest: dNoise, data: noise }] });
    const plain = await cas.batchReadBlobs({ digests: [dText] });
    expect(plain.responses[0]).toMatchObject({ compressor: Compressor_Value.IDENTITY, data: text });
    const zstd = await cas.batchReadBlobs({ digests: [dText, dNoise], acceptableCompressors: [Compressor_Value.ZSTD] });
    expect(zstd.responses[0]!.compressor).toBe(Compressor_Value.ZSTD);
    expect(zstd.responses[0]!.data.byteLength).toBeLessThan(text.byteLength / 2);
    expect(decompress(zstd.responses[0]!.data)).toEqual(text);
    expect(zstd.responses[1]).toMatchObject({ compressor: Compressor_Value.IDENTITY, data: noise });
  });
});

describe("the blob HTTP surface with zstd", () => {
  it("PUT with Content-Encoding: zstd or to a compressed-blobs name; GET compressed both ways", async () => {
    const data = compressible(500_000, 15);
    const d = await digestOf(data);
    const zstd = await zstdCompress(data);
    const put = await SELF.fetch(`http://kiln/h/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, {
      method: "PUT",
      body: zstd,
      headers: { "content-encoding": "zstd" },
    });
    expect(put.status).toBe(200);
    expect(await sha256Hex(new Uint8Array(await (await SELF.fetch(`http://kiln/h/blobs/${d.hash}/${d.sizeBytes}`)).arrayBuffer()))).toBe(d.hash);

    const other = compressible(400_000, 16);
    const d2 = await digestOf(other);
    const put2 = await SELF.fetch(`http://kiln/h/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${d2.hash}/${d2.sizeBytes}`, { method: "PUT", body: await zstdCompress(other) });
    expect(put2.status).toBe(200);

    const named = await SELF.fetch(`http://kiln/h/compressed-blobs/zstd/${d2.hash}/${d2.sizeBytes}`);
    expect(named.headers.get("content-type")).toBe("application/zstd");
    expect(decompress(new Uint8Array(await named.arrayBuffer()))).toEqual(other);
    const negotiated = await SELF.fetch(`http://kiln/h/blobs/${d.hash}/${d.sizeBytes}`, { headers: { "accept-encoding": "gzip, zstd" } });
    expect(negotiated.headers.get("content-encoding")).toBe("zstd");
    const wire = new Uint8Array(await negotiated.arrayBuffer());
    expect(wire.byteLength).toBeLessThan(data.byteLength / 2);
    expect(decompress(wire)).toEqual(data);
    const refused = await SELF.fetch(`http://kiln/h/blobs/${d.hash}/${d.sizeBytes}`, { headers: { "accept-encoding": "zstd;q=0" } });
    expect(refused.headers.get("content-encoding")).toBeNull();
    expect((await refused.arrayBuffer()).byteLength).toBe(data.byteLength);
  });

  it("refuses a corrupt or mismatching zstd body with 400 and stores nothing", async () => {
    const data = compressible(200_000, 17);
    const d = await digestOf(compressible(200_000, 18));
    for (const body of [pseudoRandom(10_000, 19), await zstdCompress(data)]) {
      const r = await SELF.fetch(`http://kiln/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, { method: "PUT", body, headers: { "content-encoding": "zstd" } });
      expect(r.status).toBe(400);
    }
    const gzip = await SELF.fetch(`http://kiln/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, { method: "PUT", body: data, headers: { "content-encoding": "gzip" } });
    expect(gzip.status).toBe(400);
    expect(await stored(d.hash)).toBe(false);
  });
});
