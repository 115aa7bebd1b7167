// google.devtools.resultstore.v2.ResultStoreFileDownload: the bytes of a ResultStore File (a test
// log, an action's stderr) whose uri names a blob in Kiln's CAS (src/resultstore/file-uri.ts).
// GetFile streams, so a 1 GiB log never sits in memory; GetFileTail is one message, so it is
// bounded by TAIL_MAX.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { invalidArgument, outOfRange } from "../errors.ts";
import { ResultStoreFileDownload } from "../gen/google/devtools/resultstore/v2/resultstore_file_download_pb.ts";
import { parseFileUri } from "../resultstore/file-uri.ts";
import { readOf } from "../storage/read-failures.ts";
import { rechunk } from "../storage/rechunk.ts";
import { readBlob } from "./blobs.ts";
import { READ_CHUNK } from "./bytestream.ts";

/**
 * Most bytes one GetFileTail answers: read_limit is the most the server may return, so a larger
 * (or unlimited) tail is the last TAIL_MAX bytes, which fits the 4 MiB message size clients assume.
 */
export const TAIL_MAX = 1024 * 1024;

/** Offsets and limits as ByteStream has them: a negative offset is OUT_OF_RANGE, a negative limit an error. */
function span(offset: bigint, limit: bigint): { offset: number; limit: number } {
  if (offset < 0n) throw outOfRange(`read_offset ${offset} is negative`);
  if (limit < 0n) throw invalidArgument(`read_limit ${limit} is negative`, "read_limit");
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  return { offset: Number(offset > max ? max : offset), limit: Number(limit > max ? max : limit) };
}

function noArchives(entry: string): void {
  if (entry) throw new ConnectError("archive_entry is not supported: Kiln serves whole files, not entries of archives", Code.Unimplemented);
}

/** Drops the UTF-8 continuation bytes a tail cut in the middle of a character would start with. */
function fromCharacterStart(data: Uint8Array): Uint8Array {
  let i = 0;
  while (i < data.byteLength && i < 3 && (data[i]! & 0xc0) === 0x80) i++;
  return data.subarray(i);
}

export const resultStoreFileDownloadService: ServiceImpl<typeof ResultStoreFileDownload> = {
  async *getFile(req, ctx) {
    const r = parseFileUri(req.uri);
    noArchives(req.archiveEntry);
    const { offset, limit } = span(req.readOffset, req.readLimit);
    const blob = await readBlob(ctx, r.instanceName, r.digest, { offset, length: limit || undefined });
    // A read that breaks off is UNAVAILABLE with what was being read, as for ByteStream.Read.
    for await (const data of readOf(`blob ${r.digest.hash}`, "retry", () => rechunk(blob.body, READ_CHUNK, blob.length))) yield { data };
  },

  async getFileTail(req, ctx) {
    const r = parseFileUri(req.uri);
    noArchives(req.archiveEntry);
    const { offset, limit } = span(req.readOffset, req.readLimit);
    const size = r.digest.size;
    if (offset > size) throw outOfRange(`read_offset ${offset} is past the start of the ${size}-byte file`);
    const end = size - offset;
    const length = Math.min(limit || end, end, TAIL_MAX);
    const start = end - length;
    // An empty tail still checks that the blob exists (a read at its end).
    const blob = await readBlob(ctx, r.instanceName, r.digest, length ? { offset: start, length } : { offset: size });
    const data = new Uint8Array(await new Response(blob.body).arrayBuffer()).subarray(0, length);
    return { data: start > 0 ? fromCharacterStart(data) : data };
  },
};
