// FindMissingBlobs read and answered straight from its wire bytes, for the gRPC-web fast lane
// (find-missing-fast-lane.ts). A FindMissing of 10,000 digests spent more in generic protobuf
// decoding (a message object, a UTF-8 decode and a 64-bit BigInt per digest), in validating the
// decoded strings and in re-encoding the missing ones than in the lookups themselves. Here each
// digest is checked on its bytes, becomes one small {hash, size}, and the answer is the request's
// own Digest bytes copied out: FindMissingBlobsRequest.blob_digests and
// FindMissingBlobsResponse.missing_blob_digests are both field 2, repeated Digest.
//
// The reader is strict on purpose: anything it does not fully understand (a malformed or
// non-hex hash, a size over 2^53, a negative or oddly encoded varint, a known field with another
// wire type, groups) makes it give up, and the request goes to the generic codec, which reads it
// and names the fault. So this file never decides that a request is wrong, only that it is plain.
import type { BlobDigest } from "../shared/digest.ts";

export interface FindMissingWire {
  instanceName: string;
  digestFunction: number;
  /** The digests, in request order, each a well-formed SHA-256 hash and a size. */
  digests: BlobDigest[];
  /** Where each digest's Digest message lies in the request message: start, then length, per digest. */
  spans: number[];
}

/** 1 for the bytes of a lower-case hex digit, the only ones a hash may hold. */
const HEX = new Uint8Array(256);
for (const c of "0123456789abcdef") HEX[c.charCodeAt(0)] = 1;

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
const ascii = new TextDecoder();

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** Reads varints and skips fields of `m`; every read answers -1 when the bytes are not what it expects. */
class Reader {
  p = 0;
  constructor(readonly m: Uint8Array) {}

  /** A varint of at most 8 bytes whose value is a safe integer (as every length and size here is). */
  varint(): number {
    const m = this.m;
    let v = 0;
    let mul = 1;
    let b: number;
    do {
      if (this.p >= m.length || mul > 2 ** 49) return -1;
      b = m[this.p++]!;
      v += (b & 0x7f) * mul;
      mul *= 128;
    } while (b & 0x80);
    return v <= Number.MAX_SAFE_INTEGER ? v : -1;
  }

  /** Skips a field of wire type `wt` ending no later than `end`; false if it cannot. */
  skip(wt: number, end: number): boolean {
    if (wt === WIRE_VARINT) {
      // Any varint up to 10 bytes (a negative int64 in a field we do not know is well-formed).
      for (let i = 0; i < 10; i++) {
        if (this.p >= end) return false;
        if (!(this.m[this.p++]! & 0x80)) return true;
      }
      return false;
    }
    let n: number;
    if (wt === WIRE_I64) n = 8;
    else if (wt === WIRE_I32) n = 4;
    else if (wt === WIRE_LEN) n = this.varint();
    else return false; // groups (3, 4) or nothing at all
    if (n < 0 || this.p + n > end) return false;
    this.p += n;
    return true;
  }
}

/** A FindMissingBlobsRequest message, read if it is plain; undefined: let the generic codec read it. */
export function readFindMissing(m: Uint8Array): FindMissingWire | undefined {
  const r = new Reader(m);
  const out: FindMissingWire = { instanceName: "", digestFunction: 0, digests: [], spans: [] };
  while (r.p < m.length) {
    const tag = r.varint();
    if (tag < 0) return undefined;
    const field = Math.floor(tag / 8);
    const wt = tag % 8;
    if (field === 2) {
      if (wt !== WIRE_LEN) return undefined;
      const len = r.varint();
      if (len < 0 || r.p + len > m.length) return undefined;
      const start = r.p;
      const d = readDigest(r, start + len);
      if (!d) return undefined;
      out.digests.push(d);
      out.spans.push(start, len);
    } else if (field === 1) {
      if (wt !== WIRE_LEN) return undefined;
      const len = r.varint();
      if (len < 0 || r.p + len > m.length) return undefined;
      try {
        out.instanceName = utf8.decode(m.subarray(r.p, r.p + len));
      } catch {
        return undefined;
      }
      r.p += len;
    } else if (field === 3) {
      if (wt !== WIRE_VARINT) return undefined;
      const fn = r.varint();
      if (fn < 0 || fn > 0x7fffffff) return undefined;
      out.digestFunction = fn;
    } else if (!r.skip(wt, m.length)) return undefined;
  }
  return out;
}

/** One Digest message ending at `end`: a 64-digit lower-case hex hash (field 1) and a size (field 2). */
function readDigest(r: Reader, end: number): BlobDigest | undefined {
  const m = r.m;
  let hashAt = -1;
  let size = 0;
  while (r.p < end) {
    const tag = r.varint();
    if (tag < 0) return undefined;
    const field = Math.floor(tag / 8);
    const wt = tag % 8;
    if (field === 1) {
      if (wt !== WIRE_LEN || r.varint() !== 64 || r.p + 64 > end) return undefined;
      let hex = 1;
      for (let i = r.p; i < r.p + 64; i++) hex &= HEX[m[i]!]!;
      if (!hex) return undefined;
      hashAt = r.p;
      r.p += 64;
    } else if (field === 2) {
      if (wt !== WIRE_VARINT) return undefined;
      size = r.varint();
      if (size < 0) return undefined;
    } else if (!r.skip(wt, end)) return undefined;
  }
  if (r.p !== end || hashAt < 0) return undefined;
  // Its own string, not a slice of a larger one: hashes outlive the request in the existence cache.
  return { hash: ascii.decode(m.subarray(hashAt, hashAt + 64)), size };
}

const varintLength = (n: number) => {
  let len = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
};

/**
 * The FindMissingBlobsResponse for the digests at `positions` of `request` (read by
 * readFindMissing): their Digest messages exactly as the client sent them, as
 * missing_blob_digests. `headroom` bytes are left free at the start (for an envelope header).
 */
export function writeFindMissingResponse(request: Uint8Array, wire: FindMissingWire, positions: readonly number[], headroom = 0): Uint8Array {
  let size = headroom;
  for (const i of positions) {
    const len = wire.spans[2 * i + 1]!;
    size += 1 + varintLength(len) + len;
  }
  const out = new Uint8Array(size);
  let o = headroom;
  for (const i of positions) {
    const start = wire.spans[2 * i]!;
    let len = wire.spans[2 * i + 1]!;
    out[o++] = (2 << 3) | WIRE_LEN; // missing_blob_digests
    const body = request.subarray(start, start + len);
    while (len >= 128) {
      out[o++] = (len % 128) | 0x80;
      len = Math.floor(len / 128);
    }
    out[o++] = len;
    out.set(body, o);
    o += body.byteLength;
  }
  return out;
}
