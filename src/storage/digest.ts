// Digests as parsed, validated values (bb-storage's digest.Digest habit): once a BlobDigest exists,
// it is well-formed. The parsing is shared with the bridge and the runner (src/shared/digest.ts);
// what only the worker needs lives here.
import { DigestFunction_Value } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "../errors.ts";

export {
  EMPTY_SHA256,
  blobKey,
  isEmptyBlob,
  missingSubject,
  parseDigest,
  parseDigests,
  parseHash,
  parseSize,
  toProtoDigest,
  type BlobDigest,
} from "../shared/digest.ts";

/** Kiln stores SHA-256 only; UNKNOWN means "infer from the hash length", which is SHA-256 too. */
export function checkDigestFunction(fn: DigestFunction_Value | undefined) {
  if (fn === undefined || fn === DigestFunction_Value.UNKNOWN || fn === DigestFunction_Value.SHA256) return;
  throw invalidArgument(
    `digest_function ${DigestFunction_Value[fn] ?? fn} is not supported; this server supports SHA256`,
    "digest_function",
  );
}
