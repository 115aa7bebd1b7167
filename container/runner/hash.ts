// SHA-256 digests of bytes and of (streamed) files, on Node.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import type { BlobDigest } from "../../src/shared/digest.ts";

export function digestOfBytes(bytes: Uint8Array): BlobDigest {
  return { hash: createHash("sha256").update(bytes).digest("hex"), size: bytes.byteLength };
}

/** The digest of a file's contents, read as a stream. */
export async function digestOfFile(path: string): Promise<BlobDigest> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.byteLength;
  }
  return { hash: hash.digest("hex"), size };
}
