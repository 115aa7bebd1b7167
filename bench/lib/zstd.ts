// zstd against the uncompressed path, through the bridge with grpc-js: a compressible blob
// (log-like text) written and read as blobs/... and as compressed-blobs/zstd/..., with the bytes
// that crossed the wire and the rate in uncompressed MB per second. The client compresses with the
// reference C library (@bokuweb/zstd-wasm, level 3, one frame) and checks reads with fzstd; that
// work is outside the timed regions, which cover only the transfer and the worker's side.
import { randomUUID } from "node:crypto";
import { compress, init } from "@bokuweb/zstd-wasm";
import { decompress } from "fzstd";
import { zstdDecode } from "../../src/storage/zstd/decoder.ts";
import { MiB, sha256 } from "./data.ts";
import { bsRead, bsWrite, type Client } from "./grpc.ts";
import { fmt, now, type Row } from "./stats.ts";

/** `size` bytes of build-log-like lines, different for each seed; compresses about 8:1 at level 3. */
export function logText(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let at = 0;
  let x = [...seed].reduce((h, ch) => (Math.imul(h, 31) + ch.charCodeAt(0)) >>> 0, 2166136261) || 1;
  for (let i = 0; at < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const line = `INFO: [${i}] Compiling src/module_${x % 977}/file_${(x >>> 10) % 10007}.cc (${x % 65536} bytes) seed=${seed}\n`;
    at += out.write(line, at);
  }
  return out;
}

const chunksOf = (b: Uint8Array, n = MiB) => Array.from({ length: Math.ceil(b.byteLength / n) }, (_, i) => b.subarray(i * n, (i + 1) * n));

export async function zstdBench(bs: Client, instance: string, size: number, passes: number, log: (s: string) => void): Promise<{ rows: Row[]; notes: string[] }> {
  await init();
  const label = `${size / MiB} MiB compressible`;
  log(`zstd: preparing ${2 * passes} blobs of ${label} text and compressing them (client side, untimed)`);
  const blobs = Array.from({ length: 2 * passes }, (_, i) => {
    const data = logText(`${randomUUID()}-${i}`, size);
    return { data, hash: sha256(data), zstd: compress(data, 3) };
  });
  const best = async (what: string, n: number, run: (i: number) => Promise<number>) => {
    let seconds = Infinity;
    let wire = 0;
    for (let i = 0; i < n; i++) {
      const s = now();
      wire = await run(i);
      seconds = Math.min(seconds, (now() - s) / 1000);
    }
    log(`zstd: ${what}: best ${fmt(size / 1e6 / seconds)} MB/s, ${fmt(wire / 1e6)} MB on the wire`);
    return { mbps: size / 1e6 / seconds, wire };
  };
  // The codec alone, in this process's V8: the worker's settings (level-1 frames of 1 MiB; its
  // own decoder module, fzstd fed 1 KiB at a time): the ceiling of the worker's compressed paths.
  const sample = blobs[0]!.data;
  let t = now();
  const frames = chunksOf(sample).map((c) => compress(c, 1));
  const compressMbps = size / 1e6 / ((now() - t) / 1000);
  t = now();
  let decoded = 0;
  for await (const block of zstdDecode(frames, size)) decoded += block.byteLength;
  const decompressMbps = size / 1e6 / ((now() - t) / 1000);
  if (decoded !== size) throw new Error(`zstd codec: decoded ${decoded} of ${size} bytes`);
  log(`zstd codec in V8: compress ${fmt(compressMbps)} MB/s, decompress ${fmt(decompressMbps)} MB/s`);

  const plain = (b: { hash: string }) => `${instance}/blobs/${b.hash}/${size}`;
  const packed = (b: { hash: string }) => `${instance}/compressed-blobs/zstd/${b.hash}/${size}`;

  const upPlain = await best("ByteStream.Write blobs/", passes, async (i) => {
    const b = blobs[i]!;
    await bsWrite(bs, `${instance}/uploads/${randomUUID()}/blobs/${b.hash}/${size}`, chunksOf(b.data));
    return size;
  });
  const upZstd = await best("ByteStream.Write compressed-blobs/zstd", passes, async (i) => {
    const b = blobs[passes + i]!;
    await bsWrite(bs, `${instance}/uploads/${randomUUID()}/compressed-blobs/zstd/${b.hash}/${size}`, chunksOf(b.zstd, 256 * 1024));
    return b.zstd.byteLength;
  });
  // Reads of the blob stored compressed-side, checked once (untimed) both ways.
  const b = blobs[passes]!;
  const parts: Buffer[] = [];
  await bsRead(bs, packed(b), (c) => parts.push(c));
  if (sha256(decompress(Buffer.concat(parts))) !== b.hash) throw new Error("zstd read: the decompressed bytes do not match the digest");
  const plainCheck: Buffer[] = [];
  await bsRead(bs, plain(b), (c) => plainCheck.push(c));
  if (sha256(Buffer.concat(plainCheck)) !== b.hash) throw new Error("zstd-written blob read back uncompressed does not match the digest");
  const downPlain = await best("ByteStream.Read blobs/", passes + 1, () => bsRead(bs, plain(b)));
  const downZstd = await best("ByteStream.Read compressed-blobs/zstd", passes + 1, () => bsRead(bs, packed(b)));

  const ratio = (v: number, limit: number) => `${(v / limit).toFixed(2)}x`;
  const row = (metric: string, r: { mbps: number; wire: number }, base: { mbps: number; wire: number }): Row => ({
    metric,
    value: `${fmt(r.mbps)} MB/s, ${fmt(r.wire / 1e6)} MB wire`,
    limit: `uncompressed ${fmt(base.mbps)} MB/s, ${fmt(base.wire / 1e6)} MB`,
    ratio: ratio(r.mbps, base.mbps),
  });
  return {
    rows: [
      { metric: "limit: zstd codec in V8, level-1 1 MiB frames", value: `${fmt(compressMbps)} MB/s compress, ${fmt(decompressMbps)} MB/s decompress`, limit: "-", ratio: "-" },
      { metric: `ByteStream.Write ${label}, uncompressed`, value: `${fmt(upPlain.mbps)} MB/s, ${fmt(upPlain.wire / 1e6)} MB wire`, limit: "-", ratio: "-" },
      row(`ByteStream.Write ${label}, zstd`, upZstd, upPlain),
      { metric: `ByteStream.Read ${label}, uncompressed`, value: `${fmt(downPlain.mbps)} MB/s, ${fmt(downPlain.wire / 1e6)} MB wire`, limit: "-", ratio: "-" },
      row(`ByteStream.Read ${label}, zstd`, downZstd, downPlain),
    ],
    notes: [
      `zstd: MB/s are uncompressed bytes per second through the bridge; client-side compression (level 3) and decompression are not timed. ` +
        `of ${fmt(size / 1e6)} MB, the client's level-3 stream is ${fmt(upZstd.wire / 1e6)} MB, the worker's level-1 1 MiB frames ${fmt(downZstd.wire / 1e6)} MB`,
    ],
  };
}
