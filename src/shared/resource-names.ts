// REAPI resource names, parsed and built in one place: instance names, blob reads
// (`{instance}/blobs/{hash}/{size}`, `{instance}/compressed-blobs/{compressor}/{hash}/{size}`) and
// uploads (`{instance}/uploads/{uuid}/blobs/{hash}/{size}{/metadata}`, or compressed-blobs).
// Parsing accepts what the grammar allows; whether a compressor is supported is the caller's call.
import { parseHash, parseSize, type BlobDigest } from "./digest.ts";
import { invalidArgument } from "./status.ts";

/** Path segments REAPI reserves: they cannot appear inside an instance name. */
export const RESERVED_SEGMENTS = new Set(["blobs", "uploads", "actions", "actionResults", "operations", "capabilities", "compressed-blobs"]);

const SEGMENT = /^[A-Za-z0-9._~+=@-]+$/;
const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/;
const COMPRESSOR = /^[a-z0-9_]{1,32}$/;
const DIGEST_FUNCTION_NAMES = new Set(["sha256tree", "blake3", "gitsha1", "sha1", "md5", "sha384", "sha512", "murmur3", "vso"]);
const MAX_RESOURCE_NAME = 2048;

/** Validates an instance name: "" or slash-separated segments, none reserved, no empty segment. */
export function parseInstanceName(name: string, field = "instance_name"): string {
  if (name === "") return name;
  if (name.length > 512) throw invalidArgument(`${field} is longer than 512 characters`, field);
  for (const seg of name.split("/")) {
    if (seg === "") throw invalidArgument(`${field} "${name}" has an empty path segment`, field);
    if (RESERVED_SEGMENTS.has(seg)) throw invalidArgument(`${field} "${name}" uses the reserved segment "${seg}"`, field);
    if (!SEGMENT.test(seg) || seg === "." || seg === "..") {
      throw invalidArgument(`${field} "${name}" has an invalid segment "${seg.slice(0, 40)}"`, field);
    }
  }
  return name;
}

export interface ReadResource {
  instanceName: string;
  digest: BlobDigest;
  /** Set for `compressed-blobs/{compressor}/...` (e.g. "zstd"). */
  compressor?: string;
}

export interface WriteResource extends ReadResource {
  uploadId: string;
}

const prefix = (instanceName: string) => (instanceName ? `${instanceName}/` : "");
const blobPart = (d: BlobDigest, compressor?: string) =>
  compressor ? `compressed-blobs/${compressor}/${d.hash}/${d.size}` : `blobs/${d.hash}/${d.size}`;

export const readResourceName = (instanceName: string, digest: BlobDigest, compressor?: string) =>
  `${prefix(instanceName)}${blobPart(digest, compressor)}`;

export const writeResourceName = (instanceName: string, uploadId: string, digest: BlobDigest, compressor?: string) =>
  `${prefix(instanceName)}uploads/${uploadId}/${blobPart(digest, compressor)}`;

function split(resource: string, field: string): string[] {
  if (!resource) throw invalidArgument(`${field} is required`, field);
  if (resource.length > MAX_RESOURCE_NAME) throw invalidArgument(`${field} is too long`, field);
  return resource.split("/");
}

/** `blobs/{hash}/{size}` or `compressed-blobs/{compressor}/{hash}/{size}` at segs[i]; returns the index after it. */
function blobAt(segs: string[], i: number, resource: string, field: string): { digest: BlobDigest; compressor?: string; end: number } {
  let at = i + 1;
  let compressor: string | undefined;
  if (segs[i] === "compressed-blobs") {
    compressor = segs[at++] ?? "";
    if (!COMPRESSOR.test(compressor)) throw invalidArgument(`${field}: "${compressor.slice(0, 40)}" is not a compressor name`, field);
  } else if (segs[i] !== "blobs") {
    throw invalidArgument(`${field} "${resource.slice(0, 200)}": expected "blobs" or "compressed-blobs"`, field);
  }
  if (DIGEST_FUNCTION_NAMES.has(segs[at] ?? "")) {
    throw invalidArgument(`${field}: digest function "${segs[at]}" is not supported; this server supports sha256`, field);
  }
  if (segs.length < at + 2) throw invalidArgument(`${field} "${resource.slice(0, 200)}" lacks {hash}/{size}`, field);
  const digest = { hash: parseHash(segs[at]!, field), size: parseSize(segs[at + 1]!, field) };
  return { digest, ...(compressor ? { compressor } : {}), end: at + 2 };
}

/** `{instance}/blobs/{hash}/{size}` or `{instance}/compressed-blobs/{compressor}/{hash}/{size}` (ByteStream.Read). */
export function parseReadResource(resource: string, field = "resource_name"): ReadResource {
  const segs = split(resource, field);
  const i = segs.findIndex((s) => s === "blobs" || s === "compressed-blobs");
  if (i < 0) throw invalidArgument(`${field} "${resource.slice(0, 200)}" is not {instance}/blobs/{hash}/{size}`, field);
  const { end, ...blob } = blobAt(segs, i, resource, field);
  if (segs.length !== end) throw invalidArgument(`${field} "${resource.slice(0, 200)}" has trailing segments`, field);
  return { instanceName: parseInstanceName(segs.slice(0, i).join("/"), field), ...blob };
}

/** `{instance}/uploads/{uuid}/blobs/{hash}/{size}{/optional_metadata}` (ByteStream.Write). */
export function parseWriteResource(resource: string, field = "resource_name"): WriteResource {
  const segs = split(resource, field);
  const i = segs.indexOf("uploads");
  if (i < 0 || segs.length < i + 5) {
    throw invalidArgument(`${field} "${resource.slice(0, 200)}" is not {instance}/uploads/{uuid}/blobs/{hash}/{size}`, field);
  }
  const uploadId = segs[i + 1]!;
  if (!UPLOAD_ID.test(uploadId)) throw invalidArgument(`${field}: upload id "${uploadId.slice(0, 40)}" is not a UUID`, field);
  // Anything after {size} is optional metadata, which REAPI lets servers ignore.
  const { end: _end, ...blob } = blobAt(segs, i + 2, resource, field);
  return { instanceName: parseInstanceName(segs.slice(0, i).join("/"), field), uploadId, ...blob };
}

/** The resource name as URL path segments (each percent-encoded), for the HTTP blob surface. */
export const resourcePath = (resource: string) => resource.split("/").map(encodeURIComponent).join("/");
