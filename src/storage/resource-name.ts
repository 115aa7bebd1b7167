// ByteStream resource names of REAPI, parsed into validated values by the module the bridge and
// the runner share (src/shared/resource-names.ts). The worker stores no compressed forms yet, so
// a `compressed-blobs/...` name is refused here, with the reason.
import { invalidArgument } from "../errors.ts";
import * as shared from "../shared/resource-names.ts";

export type { ReadResource, WriteResource } from "../shared/resource-names.ts";

function identityOnly<T extends shared.ReadResource>(r: T, field: string): T {
  if (r.compressor) throw invalidArgument(`${field}: compressed-blobs are not supported (no compressor is advertised)`, field);
  return r;
}

/** `{instance}/blobs/{hash}/{size}` (REAPI ByteStream.Read). */
export const parseReadResource = (resource: string, field = "resource_name") => identityOnly(shared.parseReadResource(resource, field), field);

/** `{instance}/uploads/{uuid}/blobs/{hash}/{size}{/optional_metadata}` (REAPI ByteStream.Write). */
export const parseWriteResource = (resource: string, field = "resource_name") => identityOnly(shared.parseWriteResource(resource, field), field);
