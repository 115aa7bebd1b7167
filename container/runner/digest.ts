// Blob digests as the runner handles them: SHA-256 hex plus a size in bytes, parsed and checked
// once at the edge; hashing of bytes and (streamed) files.
import { create } from "@bufbuild/protobuf";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { DigestSchema, type Digest } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "./errors.ts";

export interface BlobDigest {
  hash: string;
  size: number;
}

export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA256_HEX = /^[0-9a-f]{64}$/;

export const isEmpty = (d: BlobDigest) => d.size === 0;
export const blobKey = (d: BlobDigest) => `${d.hash}/${d.size}`;
/** How a missing blob is named in FAILED_PRECONDITION answers (as REAPI's PreconditionFailure subjects). */
export const missingSubject = (d: BlobDigest) => `blobs/${d.hash}/${d.size}`;

/** A digest from a proto message or the JSON request (sizeBytes as bigint, number or decimal string). */
export function parseDigest(d: { hash?: unknown; sizeBytes?: unknown } | undefined | null, what: string): BlobDigest {
  if (!d || typeof d !== "object") throw invalidArgument(`${what}: no digest`);
  const hash = d.hash;
  if (typeof hash !== "string" || !SHA256_HEX.test(hash)) {
    throw invalidArgument(`${what}: hash ${JSON.stringify(String(hash).slice(0, 80))} is not a SHA-256 hash (64 lowercase hex digits)`);
  }
  const raw = d.sizeBytes ?? 0;
  const size = typeof raw === "bigint" ? Number(raw) : typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : raw;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw invalidArgument(`${what}: size ${JSON.stringify(String(raw))} is not a non-negative integer`);
  }
  if (size === 0 && hash !== EMPTY_SHA256) throw invalidArgument(`${what}: a 0-byte blob must have the empty SHA-256 hash`);
  return { hash, size };
}

export const toProtoDigest = (d: BlobDigest): Digest => create(DigestSchema, { hash: d.hash, sizeBytes: BigInt(d.size) });

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
