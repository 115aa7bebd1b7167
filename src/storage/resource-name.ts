// ByteStream resource names of REAPI, parsed into validated values.
import { invalidArgument } from "../errors.ts";
import { parseHash, parseSize, type BlobDigest } from "./digest.ts";
import { parseInstanceName } from "./instance-name.ts";

export interface ReadResource {
  instanceName: string;
  digest: BlobDigest;
}
export interface WriteResource extends ReadResource {
  uploadId: string;
}

const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/;
const DIGEST_FUNCTION_NAMES = new Set(["sha256tree", "blake3", "gitsha1", "sha1", "md5", "sha384", "sha512", "murmur3", "vso"]);

function digestAt(segs: string[], i: number, resource: string, field: string): BlobDigest {
  if (DIGEST_FUNCTION_NAMES.has(segs[i] ?? "")) {
    throw invalidArgument(`${field}: digest function "${segs[i]}" is not supported; this server supports sha256`, field);
  }
  if (segs.length < i + 2) throw invalidArgument(`${field} "${resource}" lacks {hash}/{size}`, field);
  return { hash: parseHash(segs[i]!, field), size: parseSize(segs[i + 1]!, field) };
}

function split(resource: string, field: string) {
  if (!resource) throw invalidArgument(`${field} is required`, field);
  if (resource.length > 2048) throw invalidArgument(`${field} is too long`, field);
  return resource.split("/");
}

const instanceOf = (segs: string[], i: number, field: string) =>
  parseInstanceName(segs.slice(0, i).join("/"), field);

/** `{instance}/blobs/{hash}/{size}` (REAPI ByteStream.Read). */
export function parseReadResource(resource: string, field = "resource_name"): ReadResource {
  const segs = split(resource, field);
  const i = segs.findIndex((s) => s === "blobs" || s === "compressed-blobs");
  if (i < 0) throw invalidArgument(`${field} "${resource.slice(0, 200)}" is not {instance}/blobs/{hash}/{size}`, field);
  if (segs[i] === "compressed-blobs") {
    throw invalidArgument(`${field}: compressed-blobs are not supported (no compressor is advertised)`, field);
  }
  const digest = digestAt(segs, i + 1, resource, field);
  if (segs.length !== i + 3) throw invalidArgument(`${field} "${resource.slice(0, 200)}" has trailing segments`, field);
  return { instanceName: instanceOf(segs, i, field), digest };
}

/** `{instance}/uploads/{uuid}/blobs/{hash}/{size}{/optional_metadata}` (REAPI ByteStream.Write). */
export function parseWriteResource(resource: string, field = "resource_name"): WriteResource {
  const segs = split(resource, field);
  const i = segs.indexOf("uploads");
  if (i < 0 || segs.length < i + 5) {
    throw invalidArgument(`${field} "${resource.slice(0, 200)}" is not {instance}/uploads/{uuid}/blobs/{hash}/{size}`, field);
  }
  const uploadId = segs[i + 1]!;
  if (!UPLOAD_ID.test(uploadId)) throw invalidArgument(`${field}: upload id "${uploadId.slice(0, 40)}" is not a UUID`, field);
  if (segs[i + 2] === "compressed-blobs") {
    throw invalidArgument(`${field}: compressed-blobs are not supported (no compressor is advertised)`, field);
  }
  if (segs[i + 2] !== "blobs") throw invalidArgument(`${field} "${resource.slice(0, 200)}": expected "blobs" after the upload id`, field);
  // Anything after {size} is optional metadata, which REAPI lets servers ignore.
  return { instanceName: instanceOf(segs, i, field), uploadId, digest: digestAt(segs, i + 3, resource, field) };
}
