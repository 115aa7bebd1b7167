// ByteStream resource names of REAPI, parsed into validated values by the module the bridge and
// the runner share (src/shared/resource-names.ts). `compressed-blobs/...` names are accepted for
// the compressors this worker implements (src/storage/zstd/) and refused for others, with the reason.
import { invalidArgument } from "../errors.ts";
import * as shared from "../shared/resource-names.ts";

export type { ReadResource, WriteResource } from "../shared/resource-names.ts";

/** Lowercase names of the compressors served on `compressed-blobs/{compressor}/...`. */
export const BYTESTREAM_COMPRESSORS = new Set(["zstd"]);

function supportedOnly<T extends shared.ReadResource>(r: T, field: string): T {
  if (r.compressor && !BYTESTREAM_COMPRESSORS.has(r.compressor)) {
    throw invalidArgument(`${field}: compressor "${r.compressor}" is not supported (supported: ${[...BYTESTREAM_COMPRESSORS].join(", ")})`, field);
  }
  return r;
}

/** `{instance}/blobs/{hash}/{size}` or `{instance}/compressed-blobs/zstd/{hash}/{size}` (REAPI ByteStream.Read). */
export const parseReadResource = (resource: string, field = "resource_name") => supportedOnly(shared.parseReadResource(resource, field), field);

/** `{instance}/uploads/{uuid}/blobs/{hash}/{size}{/optional_metadata}`, or compressed-blobs/zstd (REAPI ByteStream.Write). */
export const parseWriteResource = (resource: string, field = "resource_name") => supportedOnly(shared.parseWriteResource(resource, field), field);
