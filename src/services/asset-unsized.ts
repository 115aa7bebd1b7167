// An origin body of unknown length (chunked, or Content-Encoded) into R2, which stores a stream
// only of known length. The body is read in parts: one that ends within the first part is handed
// back whole for a single put; a longer one goes into an R2 multipart upload of equal parts (R2
// wants every part but the last one size, at least 5 MiB), hashed on the way (DigestStream,
// native), and is completed only if its hashes are ones the caller accepts: otherwise it is
// aborted and no object ever existed. At most two parts are held: the one R2 is taking and the
// one being read from the origin, so the origin keeps sending while R2 stores.
//
// Who failed decides the answer: reading the origin failing (its connection, the timeout) is
// thrown as OriginBroke, a status for the caller to answer; a body past the byte limit as
// TooLarge; R2 failing as UNAVAILABLE (Kiln's own storage: the RPC fails, to retry).
import { unavailableFrom } from "../errors.ts";
import { concatBytes } from "../shared/concat-bytes.ts";
// The uploads' part size (8 MiB, as resumable uploads use), and the most of a body without a length
// held in memory for one put: a 5 GiB download is 640 part uploads (subrequests; Workers Paid allows 10,000).
import { PART_SIZE } from "../storage/upload.ts";
import { upkeep } from "../storage/upkeep.ts";
import { bytesToBase64, SRI_ALGORITHMS, type Checksums, type SriAlgorithm } from "./asset-qualifiers.ts";


/** Reading the origin's body failed: the origin's fault (a status), not Kiln's. */
export class OriginBroke extends Error {
  constructor(readonly error: unknown) {
    super(String((error as Error)?.message ?? error));
  }
}

/** The body passed the byte limit; it was cancelled. */
export class TooLarge extends Error {
  constructor(readonly max: number) {
    super(`more than ${max} bytes`);
  }
}

/** A part: the origin's chunks as they came (no copy), `length` bytes in all. */
export interface Part {
  chunks: Uint8Array[];
  length: number;
}

/** The origin's body, taken a part at a time and counted against `max`. */
export class PartReader {
  /** The body has ended: the part last returned was its last. */
  ended = false;
  private total = 0;
  private carry: Uint8Array | undefined;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor(
    body: ReadableStream<Uint8Array>,
    private readonly max: number,
  ) {
    this.reader = body.getReader();
  }

  /** The next `size` bytes, fewer only if the body ends; OriginBroke or TooLarge. */
  async next(size: number): Promise<Part> {
    const chunks: Uint8Array[] = [];
    let length = 0;
    while (length < size && !this.ended) {
      const chunk = this.carry ?? (await this.pull());
      this.carry = undefined;
      if (!chunk) break;
      const n = Math.min(chunk.byteLength, size - length);
      chunks.push(n === chunk.byteLength ? chunk : chunk.subarray(0, n));
      if (n < chunk.byteLength) this.carry = chunk.subarray(n);
      length += n;
    }
    // A full part: one more read says whether it was the last, so no part is ever empty and a
    // body of exactly one part still counts as short.
    if (!this.carry && !this.ended) this.carry = await this.pull();
    return { chunks, length };
  }

  /** Stops reading (the origin's connection is let go); never throws. */
  async cancel(reason?: unknown): Promise<void> {
    await this.reader.cancel(reason).catch(() => {});
  }

  /** The next non-empty chunk, or undefined at the end. */
  private async pull(): Promise<Uint8Array | undefined> {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await this.reader.read();
      } catch (e) {
        throw new OriginBroke(e);
      }
      if (r.done) {
        this.ended = true;
        return undefined;
      }
      if (r.value.byteLength === 0) continue;
      this.total += r.value.byteLength;
      if (this.total > this.max) {
        await this.cancel();
        throw new TooLarge(this.max);
      }
      return r.value;
    }
  }
}

/** The bytes of a part, in one array (for a short body's single put). */
export const partBytes = (part: Part): Uint8Array => concatBytes(part.chunks, part.length);

export interface Unsized {
  /** Where the object goes, and how its upload is started (UNAVAILABLE if R2 fails). */
  key: string;
  start: () => Promise<R2MultipartUpload>;
  /** The body: its first part (already read) and the rest. */
  first: Part;
  rest: PartReader;
  /** Hashed on the way; sha256 is always among them. */
  algorithms: SriAlgorithm[];
  /** Whether content of these checksums is kept (the upload completed) or dropped (aborted). */
  accept: (checksums: Checksums) => boolean;
}

/** The body's size and checksums, and whether it was kept under `key`. */
export interface Uploaded {
  size: number;
  checksums: Checksums;
  kept: boolean;
}

/**
 * Uploads the body in parts under `key`, completing it only if `accept` takes its checksums. On
 * every failure the origin's body is cancelled and the upload aborted (one R2 fails to abort is
 * logged as `asset_upload_left`; R2's lifecycle rule for incomplete uploads removes it).
 */
export async function uploadUnsized(bucket: R2Bucket, u: Unsized): Promise<Uploaded> {
  const hashers = u.algorithms.map((a) => ({ a, ds: new crypto.DigestStream(SRI_ALGORITHMS[a]) }));
  // Aborted on a failure, a hasher rejects its digest: nobody awaits it then.
  for (const h of hashers) h.ds.digest.catch(() => {});
  const writers = hashers.map((h) => h.ds.getWriter());
  let upload: R2MultipartUpload | undefined;
  const parts: R2UploadedPart[] = [];
  // The part R2 is taking: awaited before the next is sent, so at most two parts are held (this
  // one and the one being read).
  let sending: Promise<void> = Promise.resolve();
  let size = 0;
  let done = false;
  try {
    upload = await u.start().catch((e: unknown) => {
      throw unavailableFrom("the download's multipart upload could not be started in R2", e, "nothing was stored; retry");
    });
    let part = u.first;
    for (let n = 1; ; n++) {
      // Hashed before R2 reads the chunks: nothing else touches them after.
      await Promise.all(writers.flatMap((w) => part.chunks.map((c) => w.write(c))));
      size += part.length;
      await sending;
      sending = sendPart(upload, n, part).then((p) => void parts.push(p));
      sending.catch(() => {}); // awaited before the next part or after the last
      if (u.rest.ended) break;
      part = await u.rest.next(PART_SIZE);
    }
    await sending;
    await Promise.all(writers.map((w) => w.close()));
    const checksums: Checksums = {};
    for (const { a, ds } of hashers) checksums[a] = bytesToBase64(await ds.digest);
    if (!u.accept(checksums)) return { size, checksums, kept: false };
    await upload.complete(parts).catch((e: unknown) => {
      throw unavailableFrom("the download's multipart upload could not be completed in R2", e, "nothing was stored; retry");
    });
    done = true;
    return { size, checksums, kept: true };
  } finally {
    if (!done) {
      await u.rest.cancel();
      await Promise.all(writers.map((w) => w.abort().catch(() => {})));
      // A part still in flight settles first: aborting under it could leave it behind.
      await sending.catch(() => {});
      if (upload) await upkeep(upload.abort(), "asset_upload_left", { key: u.key });
    }
  }
}

/** Part `n` into R2 as a stream of its known length; UNAVAILABLE if R2 fails it. */
async function sendPart(upload: R2MultipartUpload, n: number, part: Part): Promise<R2UploadedPart> {
  const fixed = new FixedLengthStream(part.length);
  const put = upload.uploadPart(n, fixed.readable);
  const writer = fixed.writable.getWriter();
  // A part R2 refuses without reading it must also stop the writes, which would wait forever.
  put.catch((e: unknown) => writer.abort(e).catch(() => {}));
  const written = (async () => {
    for (const c of part.chunks) await writer.write(c);
    await writer.close();
  })();
  try {
    const [uploaded] = await Promise.all([put, written.catch(() => {})]);
    return uploaded;
  } catch (e) {
    throw unavailableFrom(`part ${n} of the download could not be stored in R2`, e, "nothing was stored; retry");
  }
}
