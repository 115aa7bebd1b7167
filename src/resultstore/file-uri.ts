// File URIs that ResultStoreFileDownload serves: ByteStream names of blobs in Kiln's own CAS, as
// Bazel writes them into its build events (`bytestream://{host}/{instance}/blobs/{hash}/{size}`).
// The host is only a name for the cache the client used (the bridge, a custom domain): the blob is
// read from this server's CAS by digest, under the caller's key and instance, and nothing is ever
// fetched from the URI's host. Any other scheme (file://, http://, gs://…) is refused, not followed.
import { invalidArgument } from "../errors.ts";
import { parseReadResource, type ReadResource } from "../storage/resource-name.ts";

/**
 * The download API's own prefixes: "files/" (the proto's comment), "file/" and "file/tail/" (its
 * HTTP bindings). Behind them the URI may be percent-encoded, as a REST path segment carries it.
 */
const PREFIX = /^(?:files\/|file\/tail\/|file\/)/;

export function parseFileUri(uri: string, field = "uri"): ReadResource {
  if (!uri) throw invalidArgument(`${field} is required`, field);
  let rest = uri;
  if (PREFIX.test(rest)) {
    rest = rest.replace(PREFIX, "");
    try {
      rest = decodeURIComponent(rest);
    } catch {
      throw invalidArgument(`${field} "${uri.slice(0, 200)}" is not valid percent-encoding`, field);
    }
  }
  const m = /^bytestream:\/\/[^/]*\/(.*)$/.exec(rest);
  if (!m) {
    throw invalidArgument(
      `${field} "${rest.slice(0, 200)}" is not served here: only bytestream://{host}/{instance}/blobs/{hash}/{size} URIs of blobs in this server's CAS can be read`,
      field,
    );
  }
  const r = parseReadResource(m[1]!, field);
  if (r.compressor) throw invalidArgument(`${field}: compressed-blobs URIs are not served here; name the blob as blobs/{hash}/{size}`, field);
  return r;
}
