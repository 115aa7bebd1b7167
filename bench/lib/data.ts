// Deterministic bench data: the AES-128-CTR keystream of a seed (a fast, seeded PRNG), produced
// in chunks so a 256 MiB blob is never held in memory; hashed as it is generated.
import { createCipheriv, createHash } from "node:crypto";

export const KiB = 1024;
export const MiB = 1024 * 1024;

const seedKey = (seed: string) => createHash("sha256").update(`kiln-bench:${seed}`).digest().subarray(0, 16);

/** `length` bytes of the stream for `seed`, in chunks of `chunk` bytes (the last may be shorter). */
export function* keystream(seed: string, length: number, chunk = MiB): Generator<Buffer> {
  const cipher = createCipheriv("aes-128-ctr", seedKey(seed), Buffer.alloc(16));
  const zeros = Buffer.alloc(chunk);
  for (let done = 0; done < length; ) {
    const n = Math.min(chunk, length - done);
    yield cipher.update(n === chunk ? zeros : zeros.subarray(0, n));
    done += n;
  }
}

export const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** SHA-256 (hex) of the stream for `seed` without holding it. */
export function hashOfStream(seed: string, length: number): string {
  const h = createHash("sha256");
  for (const c of keystream(seed, length)) h.update(c);
  return h.digest("hex");
}

/** A large blob: its seed, size and hash, and a fresh chunk iterator for each pass over it. */
export interface BigBlob {
  seed: string;
  size: number;
  hash: string;
  chunks(chunk?: number): Generator<Buffer>;
}

export function bigBlob(seed: string, size: number): BigBlob {
  return { seed, size, hash: hashOfStream(seed, size), chunks: (chunk = MiB) => keystream(seed, size, chunk) };
}

export interface SmallBlob {
  data: Buffer;
  hash: string;
}

/** `count` distinct blobs of `size` bytes, all cut from one keystream. */
export function smallBlobs(seed: string, count: number, size: number): SmallBlob[] {
  const all = Buffer.concat([...keystream(seed, count * size)]);
  return Array.from({ length: count }, (_, i) => {
    const data = all.subarray(i * size, (i + 1) * size);
    return { data, hash: sha256(data) };
  });
}

/** Machine limit: node:crypto SHA-256 over `total` bytes in 1 MiB chunks; MB/s (10^6 bytes). */
export function sha256Speed(total: number): { mbps: number; seconds: number } {
  const chunk = [...keystream("sha-speed", MiB)][0]!;
  const h = createHash("sha256");
  h.update(chunk); // warm
  const t0 = performance.now();
  const h2 = createHash("sha256");
  for (let done = 0; done < total; done += MiB) h2.update(chunk);
  h2.digest();
  const seconds = (performance.now() - t0) / 1000;
  return { mbps: total / 1e6 / seconds, seconds };
}

/**
 * SHA-256 in JavaScript (@noble/hashes, what the worker's resumable ByteStream path hashes with,
 * since Web Crypto cannot save a digest's state) on this machine's V8: MB/s.
 */
export async function nobleSha256Speed(total: number): Promise<{ mbps: number; seconds: number }> {
  const { sha256: noble } = await import("@noble/hashes/sha2.js");
  const chunk = new Uint8Array([...keystream("sha-speed", MiB)][0]!);
  noble.create().update(chunk).digest(); // warm
  const t0 = performance.now();
  const h = noble.create();
  for (let done = 0; done < total; done += MiB) h.update(chunk);
  h.digest();
  const seconds = (performance.now() - t0) / 1000;
  return { mbps: total / 1e6 / seconds, seconds };
}
