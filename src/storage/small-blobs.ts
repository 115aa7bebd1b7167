// Small blobs are kept with their index rows (durable-objects/cas-index.ts), not in R2. Most blobs
// of a build are small (Directories, Commands, Actions, small outputs) and for them an R2 put is
// nearly all of a write's cost: one shard call per batch is several times cheaper, and a row's
// write costs less than an R2 write operation on a deployed Kiln too. Large blobs stay in R2,
// where storage is cheaper and a body can stream.
//
// R2 verified the SHA-256 of every blob it stored; for these the worker does it, before anything
// is recorded.
import { SMALL_BLOB_MAX_BYTES } from "../shared/small-blob-size.ts";
import type { BlobDigest } from "./digest.ts";
import { hex } from "./sha256-state.ts";

/** Bytes that are not the blob their digest names (any store's writes: a client-facing verdict). */
export class DigestMismatch extends Error {}

export const isSmall = (d: BlobDigest) => d.size <= SMALL_BLOB_MAX_BYTES;

/** The whole body of a blob of d.size bytes; DigestMismatch as soon as it runs long, or if it is short. */
export async function readSmallBody(d: BlobDigest, body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const out = new Uint8Array(d.size);
  let n = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.byteLength > d.size) throw new DigestMismatch(`more than the ${d.size} bytes the digest declares`);
      out.set(value, n);
      n += value.byteLength;
    }
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    throw e;
  }
  if (n !== d.size) throw new DigestMismatch(`${n} bytes where the digest declares ${d.size}`);
  return out;
}

/** DigestMismatch unless `data` hashes to d.hash. */
export async function checkSha256(d: BlobDigest, data: Uint8Array): Promise<void> {
  if (hex(new Uint8Array(await crypto.subtle.digest("SHA-256", data))) !== d.hash) throw new DigestMismatch(`the data does not hash to ${d.hash}`);
}
