// Blob digests as parsed, validated values (SHA-256 hex and a size in bytes): once a BlobDigest
// exists, it is well-formed. Platform-free; hashing lives with each platform's I/O.
import { invalidArgument } from "./status.ts";

export interface BlobDigest {
  readonly hash: string;
  readonly size: number;
}

export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** The same test, faster over long lists: the length, then any character that is not lowercase hex. */
const NOT_HEX = /[^0-9a-f]/;

export const isEmptyBlob = (d: BlobDigest) => d.size === 0 && d.hash === EMPTY_SHA256;
/** `{hash}/{size}`: a map key, and the tail of every blob resource name. */
export const blobKey = (d: BlobDigest) => `${d.hash}/${d.size}`;
/** The subject of a PreconditionFailure MISSING violation. */
export const missingSubject = (d: BlobDigest) => `blobs/${d.hash}/${d.size}`;

export function parseHash(hash: string, field = "hash"): string {
  if (!SHA256_HEX.test(hash)) {
    throw invalidArgument(`${field}: "${hash.slice(0, 80)}" is not a SHA-256 hash (64 lowercase hex digits)`, field);
  }
  return hash;
}

/** A size from a proto (bigint), JSON (decimal string) or a number. */
export function parseSize(size: bigint | number | string, field = "size_bytes"): number {
  let n: number;
  if (typeof size === "string") {
    if (!/^\d{1,16}$/.test(size)) throw invalidArgument(`${field}: "${size.slice(0, 40)}" is not a non-negative integer`, field);
    n = Number(size);
  } else n = Number(size);
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${field}: ${String(size)} is not a valid size`, field);
  return n;
}

/**
 * Validates a proto Digest (REAPI: the size is part of the identity). A size-0 digest with another
 * hash than the empty blob's is well-formed but names nothing: the CAS answers it as missing
 * (FindMissingBlobs) and NOT_FOUND (reads), consistently, rather than refusing the request.
 */
export function parseDigest(d: { hash: string; sizeBytes: bigint | number | string } | undefined, field = "digest"): BlobDigest {
  if (!d) throw invalidArgument(`${field} is required`, field);
  return { hash: parseHash(d.hash, `${field}.hash`), size: parseSize(d.sizeBytes, `${field}.size_bytes`) };
}

/**
 * Validates a repeated Digest field (FindMissingBlobs takes 10,000 at a time): a well-formed
 * element costs a regex test and nothing else; its name (`field[i]`) is spelled out only in an error.
 */
export function parseDigests(ds: readonly ({ hash: string; sizeBytes: bigint | number | string } | undefined)[], field: string): BlobDigest[] {
  const out = new Array<BlobDigest>(ds.length);
  for (let i = 0; i < ds.length; i++) {
    const d = ds[i];
    // Number() of a bigint past 2^53 rounds to 2^53 or more: refused by the bound, as it should be.
    const size = typeof d?.sizeBytes === "bigint" ? Number(d.sizeBytes) : -1;
    out[i] =
      d && size >= 0 && size <= Number.MAX_SAFE_INTEGER && d.hash.length === 64 && !NOT_HEX.test(d.hash)
        ? { hash: d.hash, size }
        : parseDigest(d, `${field}[${i}]`);
  }
  return out;
}

/** The fields of a proto Digest (pass to create(DigestSchema, ...) or use as an init shape). */
export const toProtoDigest = (d: BlobDigest) => ({ hash: d.hash, sizeBytes: BigInt(d.size) });
