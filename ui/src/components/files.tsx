// ResultStore Files: a bytestream:// URI of a CAS blob opens on the CAS page and downloads from
// the blob HTTP surface; any other URI is shown as it is.
import type { File } from "../../../src/gen/google/devtools/resultstore/v2/file_pb.ts";
import { blobUrl } from "../blobs.ts";
import { bytes } from "../format.ts";
import { digestPath, Link } from "../router.tsx";
import { Download } from "./common.tsx";

/** `bytestream://host/{instance}/blobs/{hash}/{size}` → its instance and digest. */
function casBlobOf(uri: string): { instance: string; hash: string; sizeBytes: bigint } | null {
  const m = /^bytestream:\/\/[^/]*\/(?:(.+)\/)?blobs\/([0-9a-f]{64})\/([0-9]+)$/.exec(uri);
  return m ? { instance: m[1] ?? "", hash: m[2]!, sizeBytes: BigInt(m[3]!) } : null;
}

export const fileSize = (f: File): bigint | undefined => f.length ?? casBlobOf(f.uri)?.sizeBytes;

export function FileLink({ file }: { file: File }) {
  const blob = casBlobOf(file.uri);
  const size = fileSize(file);
  if (!blob) {
    return (
      <span>
        {file.uid} <code class="muted">{file.uri}</code>
      </span>
    );
  }
  const name = file.uid.split("/").pop() || file.uid;
  return (
    <span>
      <Link href={`${digestPath("cas", blob.instance, blob)}?as=raw`}>{file.uid}</Link>
      {size !== undefined && <span class="muted"> {bytes(size)}</span>}{" "}
      <Download href={blobUrl(blob.instance, blob)} name={name}>
        download
      </Download>
    </span>
  );
}
