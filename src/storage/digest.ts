// Digests as parsed, validated values: once a BlobDigest exists, it is well-formed.
import { DigestFunction_Value, type Digest } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "../errors.ts";

export interface BlobDigest {
  readonly hash: string;
  readonly size: number;
}

export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA256_HEX = /^[0-9a-f]{64}$/;

export const isEmptyBlob = (d: BlobDigest) => d.size === 0 && d.hash === EMPTY_SHA256;
export const blobKey = (d: BlobDigest) => `${d.hash}/${d.size}`;
/** The subject of a PreconditionFailure MISSING violation. */
export const missingSubject = (d: BlobDigest) => `blobs/${d.hash}/${d.size}`;

export function parseHash(hash: string, field = "hash"): string {
  if (!SHA256_HEX.test(hash)) {
    throw invalidArgument(`${field}: "${hash.slice(0, 80)}" is not a SHA-256 hash (64 lowercase hex digits)`, field);
  }
  return hash;
}

export function parseSize(size: bigint | number | string, field = "size_bytes"): number {
  let n: number;
  if (typeof size === "string") {
    if (!/^\d{1,16}$/.test(size)) throw invalidArgument(`${field}: "${size.slice(0, 40)}" is not a non-negative integer`, field);
    n = Number(size);
  } else n = Number(size);
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${field}: ${String(size)} is not a valid size`, field);
  return n;
}

/** Validates a proto Digest (REAPI: the size is part of the identity). */
export function parseDigest(d: Digest | undefined, field = "digest"): BlobDigest {
  if (!d) throw invalidArgument(`${field} is required`, field);
  return { hash: parseHash(d.hash, `${field}.hash`), size: parseSize(d.sizeBytes, `${field}.size_bytes`) };
}

export const toProtoDigest = (d: BlobDigest) => ({ hash: d.hash, sizeBytes: BigInt(d.size) });

/** Kiln stores SHA-256 only; UNKNOWN means "infer from the hash length", which is SHA-256 too. */
export function checkDigestFunction(fn: DigestFunction_Value | undefined) {
  if (fn === undefined || fn === DigestFunction_Value.UNKNOWN || fn === DigestFunction_Value.SHA256) return;
  throw invalidArgument(
    `digest_function ${DigestFunction_Value[fn] ?? fn} is not supported; this server supports SHA256`,
    "digest_function",
  );
}
