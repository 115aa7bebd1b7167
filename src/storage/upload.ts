// ByteStream.Write into the CAS. Most blobs go straight into one verified R2 put: R2 checks the
// SHA-256 natively, and a single-put object reads back fast (a multipart one does not, locally).
// A dropped upload of such a blob has committed nothing and restarts at 0; a request through
// Cloudflare's edge carries at most 100-500 MB anyway. Blobs above RESUMABLE_UPLOAD_ABOVE_BYTES
// (1 GiB by default) go into an R2 multipart upload whose state (parts, committed bytes, SHA-256
// state) is saved in the CAS index after every part, so a dropped stream resumes at
// committed_size and the blob still only becomes visible after its whole hash and size are
// checked. Only that path hashes in JS: it is the one that needs a hash state it can save.
import { ConnectError } from "@connectrpc/connect";
import type { UploadSession } from "../../durable-objects/cas-index.ts";
import type { Env } from "../env.ts";
import { invalidArgument, unavailableFrom } from "../errors.ts";
import type { BlobStore } from "./blob-store.ts";
import { shardCall } from "./cas-index.ts";
import { type BlobDigest } from "./digest.ts";
import { hex, newSha256, restoreSha256, saveSha256 } from "./sha256-state.ts";
import { upkeep } from "./upkeep.ts";

/** R2 multipart parts must be at least 5 MiB and (but the last) of one size. */
export const PART_SIZE = 8 * 1024 * 1024;

export interface WriteChunk {
  offset: number;
  data: Uint8Array;
  finish: boolean;
}

const DEFAULT_RESUMABLE_ABOVE = 1024 * 1024 * 1024;

/** Blobs larger than this are uploaded resumably (multipart); never less than one part. */
export function resumableAbove(env: Env): number {
  const n = Number(env.RESUMABLE_UPLOAD_ABOVE_BYTES);
  return Math.max(PART_SIZE, Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_RESUMABLE_ABOVE);
}

const sessionKey = (uploadId: string, d: BlobDigest) => `${uploadId}/${d.hash}/${d.size}`;

/** Bytes already committed for this upload (QueryWriteStatus). */
export async function committedBytes(store: BlobStore, uploadId: string, d: BlobDigest): Promise<number | null> {
  const s = await readSession(store, uploadId, d);
  return s ? s.committed : null;
}

/** An upload's saved state from its index shard; a shard that fails is UNAVAILABLE, to retry. */
const readSession = (store: BlobStore, uploadId: string, d: BlobDigest) =>
  shardCall(`read the state of upload ${uploadId}`, store.index.shard(d.hash).getUpload(sessionKey(uploadId, d)));

/**
 * Removing a finished or refused upload's state is upkeep: a failure is logged, never the call's
 * answer (the shard's alarm removes states left over a day).
 */
const dropSession = (shard: ReturnType<BlobStore["index"]["shard"]>, key: string) => upkeep(shard.deleteUpload(key), "upload_state_left", { upload: key });

/**
 * Where a Write call left its upload: the bytes committed, and whether the blob is stored (a Write
 * that sent every byte without finish_write has committed them all, and is not done).
 */
export interface WriteResult {
  committed: number;
  done: boolean;
}

/** Consumes the chunks of one Write call. `firstOffset` must equal what is committed already. */
export async function uploadBlob(
  store: BlobStore,
  uploadId: string,
  d: BlobDigest,
  firstOffset: number,
  chunks: AsyncIterable<WriteChunk>,
): Promise<WriteResult> {
  if (d.size <= resumableAbove(store.env)) {
    if (firstOffset !== 0) throw invalidArgument(`write_offset ${firstOffset}: nothing is committed for this upload, start at 0`, "write_offset");
    const bytes = streamOf(chunks, 0, d.size);
    try {
      await store.write(d, bytes.stream);
    } catch (e) {
      // A stream closed before finish_write is no error: a single put commits nothing until the
      // blob is whole, so the client resumes at 0.
      if (bytes.endedEarly()) return { committed: 0, done: false };
      throw e;
    }
    return { committed: d.size, done: true };
  }
  return writeMultipart(store, uploadId, d, firstOffset, chunks);
}

/**
 * A part that was not stored (R2 failing, or the client's stream breaking off) as UNAVAILABLE: the
 * session keeps the parts before it, and the client resumes at its committed size. A verdict
 * already given (the client's data refused) stays as it is.
 */
const partFailed = (partNumber: number, committed: number, e: unknown) =>
  unavailableFrom(`part ${partNumber} was not stored`, e, `committed_size stays ${committed}: resume there`);

/** Why a byte stream stopped: the client closed its stream without finish_write. */
class EndedEarly extends Error {}

/**
 * A byte stream over the chunks, checking offsets, size and finish_write on the way. A stream
 * closed without finish_write errors with EndedEarly, and endedEarly() says so afterwards.
 */
function streamOf(chunks: AsyncIterable<WriteChunk>, start: number, size: number) {
  const it = chunks[Symbol.asyncIterator]();
  let expected = start;
  let finished = false;
  let early = false;
  const stream = new ReadableStream<Uint8Array>({
    // Each pull enqueues, closes or errors: one that returned with nothing (an empty message in
    // the middle of a Write) could leave the reader waiting for a pull that never comes.
    async pull(ctl) {
      for (;;) {
        const { value, done } = await it.next();
        if (done) {
          early = !finished;
          if (early) ctl.error(new EndedEarly(`the stream ended at ${expected} bytes without finish_write`));
          else ctl.close();
          return;
        }
        if (finished) return ctl.error(invalidArgument("data after finish_write"));
        if (value.offset !== expected) {
          return ctl.error(invalidArgument(`write_offset ${value.offset} where ${expected} was expected`, "write_offset"));
        }
        expected += value.data.byteLength;
        if (expected > size) return ctl.error(invalidArgument(`more than the ${size} bytes the resource name declares`));
        finished = value.finish;
        if (value.finish && expected !== size) {
          return ctl.error(invalidArgument(`finish_write at ${expected} bytes where the resource name declares ${size}`));
        }
        if (value.data.byteLength) return ctl.enqueue(value.data);
        if (value.finish) return ctl.close();
      }
    },
    cancel(reason) {
      void it.return?.(reason);
    },
  });
  return { stream, endedEarly: () => early };
}

async function writeMultipart(
  store: BlobStore,
  uploadId: string,
  d: BlobDigest,
  firstOffset: number,
  chunks: AsyncIterable<WriteChunk>,
): Promise<WriteResult> {
  const shard = store.index.shard(d.hash);
  const key = sessionKey(uploadId, d);
  const bucket = store.env.CAS;
  let session: UploadSession | null = await readSession(store, uploadId, d);
  if (!session) {
    if (firstOffset !== 0) throw invalidArgument(`write_offset ${firstOffset}: nothing is committed for this upload, start at 0`, "write_offset");
    const mpu = await bucket.createMultipartUpload(store.key(d.hash)).catch((e: unknown) => Promise.reject(unavailableFrom("starting the upload failed", e)));
    session = { r2Key: mpu.key, multipartId: mpu.uploadId, parts: [], committed: 0, sha: saveSha256(newSha256()) };
    // Not aborted when this fails: the record may have landed (its answer lost), and a retry
    // resumes the multipart upload it names. One nothing names is left to R2's lifecycle rule
    // for incomplete multipart uploads.
    await shardCall(`record the start of upload ${uploadId}`, shard.putUpload(key, session));
  } else if (firstOffset !== session.committed) {
    throw invalidArgument(
      `write_offset ${firstOffset} does not match committed_size ${session.committed}; call QueryWriteStatus and resume there`,
      "write_offset",
    );
  }
  const mpu = bucket.resumeMultipartUpload(session.r2Key, session.multipartId);
  const hasher = restoreSha256(session.sha);
  const bytes = streamOf(chunks, session.committed, d.size).stream.getReader();
  let carry: Uint8Array | undefined;

  while (session.committed < d.size) {
    const partNumber = session.parts.length + 1;
    const partLen = Math.min(PART_SIZE, d.size - session.committed);
    const fixed = new FixedLengthStream(partLen);
    const upload = mpu.uploadPart(partNumber, fixed.readable);
    const writer = fixed.writable.getWriter();
    // A part R2 refuses without reading it must also stop the writes, which would otherwise wait
    // for a reader forever.
    upload.catch((e: unknown) => writer.abort(e).catch(() => {}));
    let filled = 0;
    try {
      while (filled < partLen) {
        let chunk = carry;
        carry = undefined;
        if (!chunk) {
          const r = await bytes.read();
          if (r.done) throw new EndedEarly(`the stream ended at ${session.committed + filled} of ${d.size} bytes`);
          chunk = r.value;
        }
        if (filled + chunk.byteLength > partLen) {
          carry = chunk.subarray(partLen - filled);
          chunk = chunk.subarray(0, partLen - filled);
        }
        hasher.update(chunk);
        await writer.write(chunk);
        filled += chunk.byteLength;
      }
      await writer.close();
    } catch (e) {
      await writer.abort(e).catch(() => {});
      const refused = await upload.then(
        () => undefined,
        (r: unknown) => r,
      );
      // The session stays at the last whole part: the client resumes from there. A stream
      // closed without finish_write is answered with that, not an error.
      if (e instanceof EndedEarly) return { committed: session.committed, done: false };
      // The client's data refused is the answer; otherwise R2's reason, not the aborted write's.
      throw partFailed(partNumber, session.committed, e instanceof ConnectError ? e : (refused ?? e));
    }
    const committed = session.committed;
    const part: R2UploadedPart = await upload.catch((e: unknown) => Promise.reject(partFailed(partNumber, committed, e)));
    session = {
      ...session,
      parts: [...session.parts, { partNumber: part.partNumber, etag: part.etag }],
      committed: session.committed + partLen,
      sha: saveSha256(hasher),
    };
    // Whether the record landed is unknown (its answer may be what was lost): the client asks.
    await shard.putUpload(key, session).catch((e: unknown) => {
      throw unavailableFrom(`part ${partNumber} is stored but recording it failed`, e, "call QueryWriteStatus and resume at its committed_size");
    });
  }

  // Every byte is in, and the Write must still end as ByteStream says: with finish_write and
  // nothing after it. Reading on to that end also takes the client's last frames off the
  // connection before the answer goes out (an answer to a body still being sent breaks HTTP/1.1
  // clients), and decodes a compressed Write to its frame's end.
  try {
    // The stream closes at finish_write; anything else errors (streamOf), so this is a guard.
    if (!(await bytes.read()).done) throw invalidArgument(`more than the ${d.size} bytes the resource name declares`);
  } catch (e) {
    // Closed without finish_write: not finished. Every part is kept; a Write at committed_size
    // with finish_write completes the blob.
    if (e instanceof EndedEarly) return { committed: session.committed, done: false };
    throw e;
  }
  const actual = hex(hasher.digest());
  if (actual !== d.hash) {
    await mpu.abort().catch(() => {});
    await dropSession(shard, key);
    throw invalidArgument(`the uploaded data hashes to ${actual}, not ${d.hash}; nothing was stored`);
  }
  await complete(store, mpu, session, d);
  await store.index.add([d]);
  await dropSession(shard, key);
  return { committed: d.size, done: true };
}

/**
 * Completes the multipart upload into the blob's object. A complete R2 carried out but whose answer
 * was lost, or a resumed upload whose blob was completed before its index record failed, finds the
 * upload gone and the object there: the verified blob, so the upload goes on to record it (without
 * this, such an upload could never finish under its name).
 */
async function complete(store: BlobStore, mpu: R2MultipartUpload, session: UploadSession, d: BlobDigest): Promise<void> {
  try {
    await mpu.complete(session.parts);
  } catch (e) {
    const head = await store.env.CAS.head(store.key(d.hash)).catch(() => null);
    if (head?.size !== d.size) throw unavailableFrom("completing the upload failed", e);
    await mpu.abort().catch(() => {}); // its parts, if the object came from another upload
  }
}
