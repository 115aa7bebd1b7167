// Remote Asset qualifiers, checked once when a request is parsed. Kiln knows a fixed lexicon
// (the spec's qualifiers.md plus Bazel's canonical id) and refuses every other name, on Fetch and
// on Push alike, with the BadRequest the spec asks for: one `qualifiers.name` violation per
// unsupported qualifier. Of the known names:
// - checksum.sri is verified (on bytes fetched from origin or pushed, or against what an asset is
//   known to hash to) and is not part of an asset's key: any content that satisfies it answers.
// - bazel.canonical_id and resource_type are part of the key; resource_type is also checked
//   against the origin's Content-Type when Kiln fetches.
// - vcs.branch, vcs.commit and directory are part of the key and only ever match pushed assets:
//   Kiln does not clone repositories or unpack archives.
// - bazel.auth_headers, http_header:NAME and http_header_url:N:NAME are headers for the origin
//   (asset-headers.ts), not part of the key.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { QualifierSchema, type Qualifier } from "../gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.ts";
import { invalidArgument } from "../errors.ts";
import { addHeaderQualifier, AUTH_HEADERS, isHeaderQualifier, isRepeatableHeaderQualifier, noHeaders, type OriginHeaders } from "./asset-headers.ts";

export const SRI = "checksum.sri";
const RESOURCE_TYPE = "resource_type";
const CANONICAL_ID = "bazel.canonical_id";
/** Qualifiers only a pushed asset can satisfy. */
const PUSH_ONLY = new Set(["vcs.branch", "vcs.commit", "directory"]);
const KNOWN = new Set([SRI, RESOURCE_TYPE, CANONICAL_ID, ...PUSH_ONLY]);
const MAX_VALUE_CHARS = 4096;
/** bazel.auth_headers carries a header object for each of up to 100 URIs. */
const MAX_AUTH_HEADERS_CHARS = 64 * 1024;
const MAX_QUALIFIERS = 64;

/** SRI algorithms Kiln verifies, by their SRI prefix, with their Web Crypto names. */
export const SRI_ALGORITHMS = { sha256: "SHA-256", sha384: "SHA-384", sha512: "SHA-512" } as const;
export type SriAlgorithm = keyof typeof SRI_ALGORITHMS;
const DIGEST_BYTES: Record<SriAlgorithm, number> = { sha256: 32, sha384: 48, sha512: 64 };

/** One hash of a checksum.sri value; base64 of the digest bytes. */
export interface SriHash {
  algorithm: SriAlgorithm;
  base64: string;
}

/** What an asset is known to hash to: base64 digests by SRI algorithm. */
export type Checksums = Partial<Record<SriAlgorithm, string>>;

export interface AssetQualifiers {
  /** The qualifiers that key an asset, sorted by name (checksum.sri excluded). */
  key: Qualifier[];
  /** The hashes of checksum.sri, if given: content must match one of them. */
  sri?: SriHash[];
  resourceType?: string;
  canonicalId?: string;
  /** Names of the given qualifiers that only a pushed asset can match. */
  pushOnly: string[];
  /** Headers to send to the origin, per URI. */
  headers: OriginHeaders;
}

/** `uriCount`: how many URIs the request has (http_header_url names one by index). */
export function parseQualifiers(qualifiers: readonly Qualifier[], uriCount: number): AssetQualifiers {
  if (qualifiers.length > MAX_QUALIFIERS) throw invalidArgument(`${qualifiers.length} qualifiers; at most ${MAX_QUALIFIERS}`, "qualifiers");
  const unsupported = qualifiers.filter((q) => !KNOWN.has(q.name) && !isHeaderQualifier(q.name));
  if (unsupported.length > 0) {
    const names = unsupported.map((q) => `"${q.name.slice(0, 200)}"`);
    throw new ConnectError(`unsupported qualifier(s) ${names.join(", ")}; Kiln supports ${[...KNOWN, AUTH_HEADERS, "http_header:NAME", "http_header_url:N:NAME"].join(", ")}`, Code.InvalidArgument, undefined, [
      { desc: BadRequestSchema, value: { fieldViolations: names.map((n) => ({ field: "qualifiers.name", description: `${n} not supported` })) } },
    ]);
  }
  const seen = new Set<string>();
  const out: AssetQualifiers = { key: [], pushOnly: [], headers: noHeaders() };
  for (const q of qualifiers) {
    // Names must be unique, but Bazel sends one http_header(_url) qualifier per value of a
    // header with several: those are taken as the header's values, in order.
    if (seen.has(q.name) && !isRepeatableHeaderQualifier(q.name)) throw invalidArgument(`qualifier "${q.name.slice(0, 200)}" is given twice; names must be unique`, "qualifiers.name");
    seen.add(q.name);
    const max = q.name === AUTH_HEADERS ? MAX_AUTH_HEADERS_CHARS : MAX_VALUE_CHARS;
    if (q.value.length > max) throw invalidArgument(`qualifier "${q.name.slice(0, 200)}" is over ${max} characters`, "qualifiers.value");
    if (isHeaderQualifier(q.name)) {
      addHeaderQualifier(out.headers, q.name, q.value, uriCount);
      continue;
    }
    if (q.name === SRI) {
      out.sri = parseSri(q.value);
      continue;
    }
    if (q.name === RESOURCE_TYPE) out.resourceType = q.value;
    if (q.name === CANONICAL_ID) out.canonicalId = q.value;
    if (PUSH_ONLY.has(q.name)) out.pushOnly.push(q.name);
    out.key.push(create(QualifierSchema, { name: q.name, value: q.value }));
  }
  out.key.sort((a, b) => (a.name < b.name ? -1 : 1));
  return out;
}

/**
 * A checksum.sri value: whitespace-separated `alg-base64[?options]` tokens (W3C SRI). Tokens of
 * other algorithms are skipped, as SRI says; a value with none Kiln can verify is refused. Each
 * digest is kept in canonical (padded) base64, as Kiln writes the ones it computes: hashes are
 * compared as strings, and SRI also allows the padding to be left out.
 */
function parseSri(value: string): SriHash[] {
  const hashes: SriHash[] = [];
  for (const token of value.trim().split(/\s+/)) {
    const m = /^(sha256|sha384|sha512)-([A-Za-z0-9+/]+={0,2})(\?.*)?$/.exec(token);
    if (!m) continue;
    const algorithm = m[1] as SriAlgorithm;
    const bytes = base64Decode(m[2]!);
    if (bytes?.length !== DIGEST_BYTES[algorithm]) {
      throw invalidArgument(`checksum.sri token "${token}" is not a ${algorithm} digest in base64`, "qualifiers.value");
    }
    hashes.push({ algorithm, base64: btoa(bytes) });
  }
  if (hashes.length === 0) throw invalidArgument(`checksum.sri "${value}" has no sha256, sha384 or sha512 hash`, "qualifiers.value");
  return hashes;
}

/** The decoded bytes (a binary string), padded or not; null if it is not base64. */
function base64Decode(b64: string): string | null {
  try {
    return atob(b64);
  } catch {
    return null;
  }
}

/**
 * The stream's digests (base64) by algorithm, hashed natively (the stream piped to DigestStream,
 * no JavaScript per chunk), split with tee where more than one.
 */
export async function checksumsOf(body: ReadableStream<Uint8Array>, algorithms: SriAlgorithm[]): Promise<Checksums> {
  const out: Checksums = {};
  const jobs: Promise<void>[] = [];
  let rest = body;
  algorithms.forEach((a, i) => {
    let mine = rest;
    if (i < algorithms.length - 1) [mine, rest] = rest.tee();
    const ds = new crypto.DigestStream(SRI_ALGORITHMS[a]);
    // Both awaited: a body that breaks off rejects ds.digest too, which must not go unhandled.
    jobs.push(Promise.all([mine.pipeTo(ds), ds.digest]).then(([, digest]) => void (out[a] = bytesToBase64(digest))));
  });
  await Promise.all(jobs);
  return out;
}

/** The SRI qualifier is satisfied when one of its hashes is one the content is known to have. */
export const sriSatisfied = (sri: readonly SriHash[], known: Checksums) => sri.some((h) => known[h.algorithm] === h.base64);

/** The checksums as a checksum.sri qualifier, for Fetch responses. */
export function sriQualifier(known: Checksums): Qualifier[] {
  const tokens = Object.entries(known).map(([alg, b64]) => `${alg}-${b64}`);
  return tokens.length ? [create(QualifierSchema, { name: SRI, value: tokens.join(" ") })] : [];
}

export const hexToBase64 = (hex: string) => btoa(String.fromCharCode(...hex.match(/../g)!.map((b) => parseInt(b, 16))));
export const base64ToHex = (b64: string) => Array.from(atob(b64), (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
export const bytesToBase64 = (bytes: ArrayBuffer) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
