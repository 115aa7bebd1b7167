// Bazel's Build Event Protocol (proto/bep, generated under src/gen/src/main/…) under a short name,
// and the BEP values Kiln reads the same way everywhere: files, times, ids.
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { File_HashType, FileSchema as RsFileSchema, type File as RsFile } from "../gen/google/devtools/resultstore/v2/file_pb.ts";
import type { File as BepFile } from "../gen/src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream_pb.ts";

export * from "../gen/src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream_pb.ts";
export { file_src_main_java_com_google_devtools_build_lib_buildeventstream_proto_build_event_stream as file_bep } from "../gen/src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream_pb.ts";

/** The type URL of a BEP event inside a BES BuildEvent.bazel_event. */
export const BAZEL_EVENT_TYPE = "build_event_stream.BuildEvent";

const BYTESTREAM_DIGEST = /\/blobs\/([0-9a-f]{64})\/(\d+)$/;

/**
 * A BEP File as a ResultStore File. The uid is the file's path (prefix and name), unique within a
 * named set; a bytestream:// URI also gives the digest and length. Inline contents and symlinks
 * have no URI to keep, so they become null (callers skip them).
 */
export function resultStoreFile(f: BepFile): RsFile | null {
  if (f.file.case !== "uri" || !f.file.value) return null;
  const uri = f.file.value;
  const m = BYTESTREAM_DIGEST.exec(uri);
  const digest = m?.[1] ?? (/^[0-9a-f]{64}$/.test(f.digest) ? f.digest : "");
  const length = m ? BigInt(m[2]!) : f.length > 0n ? f.length : undefined;
  return create(RsFileSchema, {
    uid: [...f.pathPrefix, f.name].filter(Boolean).join("/") || uri,
    uri,
    length,
    digest,
    hashType: digest ? File_HashType.SHA256 : File_HashType.HASH_TYPE_UNSPECIFIED,
  });
}

export const resultStoreFiles = (files: readonly BepFile[]): RsFile[] => files.map(resultStoreFile).filter((f): f is RsFile => f !== null);

/** Newer Bazel sends Timestamps, 4.x sends epoch milliseconds; either may be absent. */
export function timeOf(t: Timestamp | undefined, millis: bigint): Timestamp | undefined {
  if (t) return t;
  return millis > 0n ? timestampFromMs(Number(millis)) : undefined;
}

export function durationOf(d: Duration | undefined, millis: bigint): Duration | undefined {
  if (d) return d;
  return millis > 0n ? durationFromMs(Number(millis)) : undefined;
}

export const msOf = (t: Timestamp | undefined) => (t ? timestampMs(t) : undefined);

/** ResultStore ids of configurations, actions and file sets are [a-zA-Z0-9_-]; other text is hashed. */
export function simpleId(prefix: string, raw: string): string {
  const id = prefix + raw;
  return /^[A-Za-z0-9_-]{1,512}$/.test(id) ? id : prefix + bytesToHex(sha256(new TextEncoder().encode(raw))).slice(0, 40);
}
