// The CAS over R2: verified, streamed writes (a body that does not match its digest never lands)
// and ranged, streamed reads. Every write that lands is recorded in the CAS index; small blobs
// are kept in the index itself (small-blobs.ts).
import type { Env } from "../env.ts";
import { Code, ConnectError, invalidArgument, notFound, outOfRange, unavailableFrom } from "../errors.ts";
import { CasIndex, type SmallLookup } from "./cas-index.ts";
import { drain } from "./drain.ts";
import { mapLimit } from "./map-limit.ts";
import { EMPTY_SHA256, isEmptyBlob, type BlobDigest } from "./digest.ts";
import { DigestMismatch, checkSha256, isSmall, readSmallBody } from "./small-blobs.ts";

export interface BlobRead {
  body: ReadableStream<Uint8Array>;
  /** Bytes in body. */
  length: number;
}

export class BlobStore {
  readonly index: CasIndex;

  constructor(
    readonly env: Env,
    readonly tenant: string,
  ) {
    this.index = new CasIndex(env, tenant);
  }

  key(hash: string) {
    return `cas/${this.tenant}/${hash}`;
  }

  /**
   * Streams a blob, or a range of it. Throws NOT_FOUND when absent and OUT_OF_RANGE for an
   * offset past the end (an offset equal to the size reads nothing).
   */
  async read(d: BlobDigest, offset = 0, limit = 0, looked?: SmallLookup): Promise<BlobRead> {
    if (offset < 0) throw outOfRange(`read_offset ${offset} is negative`);
    if (limit < 0) throw invalidArgument(`read_limit ${limit} is negative`, "read_limit");
    if (offset > d.size) throw outOfRange(`read_offset ${offset} is past the end of the ${d.size}-byte blob`);
    const length = limit > 0 ? Math.min(limit, d.size - offset) : d.size - offset;
    if (isEmptyBlob(d)) return { body: new Blob([]).stream(), length: 0 };
    // Only the empty blob has size 0: {other hash, 0} names nothing, whatever else has that hash.
    if (d.size === 0) throw notFound(`blob ${d.hash}/0 not found (only ${EMPTY_SHA256} has size 0)`);
    // A small blob is in the index; if not (written to R2 before small blobs were kept there, or
    // the index could not be asked), R2 is asked too. `looked`: the index was already asked, and
    // R2 is asked only for a blob it records without its bytes.
    if (looked === null) throw notFound(`blob ${d.hash}/${d.size} not found`);
    const small = !isSmall(d) || looked === "r2" ? null : looked !== undefined ? looked : await this.smallByHash(d.hash);
    if (small && !(small instanceof ConnectError)) {
      if (small.size !== d.size || !small.data) throw notFound(`blob ${d.hash}/${d.size} not found`);
      return { body: bytesStream(small.data.subarray(offset, offset + length)), length };
    }
    const startedAt = Date.now();
    if (length === 0) {
      const head = await r2Read(d.hash, this.env.CAS.head(this.key(d.hash)));
      if (!head && small instanceof ConnectError) throw small;
      if (!head) await this.heal(d.hash, startedAt);
      if (head?.size !== d.size) throw notFound(`blob ${d.hash}/${d.size} not found`);
      return { body: new Blob([]).stream(), length: 0 };
    }
    const obj = await r2Read(d.hash, this.env.CAS.get(this.key(d.hash), { range: { offset, length } }));
    if (!obj && small instanceof ConnectError) throw small;
    if (!obj) await this.heal(d.hash, startedAt);
    if (!obj || obj.size !== d.size) throw notFound(`blob ${d.hash}/${d.size} not found`);
    return { body: obj.body, length };
  }

  /**
   * Every read that finds no object comes here: the index row (if any) goes, so FindMissing stops
   * saying "present" and the client uploads the blob again. Objects deleted behind Kiln's back
   * (an R2 lifecycle rule, a crash between eviction's two steps) heal this way.
   */
  private async heal(hash: string, readStartedAt: number): Promise<void> {
    await this.index.forget(hash, readStartedAt);
  }

  /**
   * What the index holds for each small blob of a batch read, in one call per shard; undefined for
   * the others. Passed to read() as `looked`, it saves a call per blob.
   */
  async smallLookups(digests: readonly BlobDigest[]): Promise<(SmallLookup | undefined)[]> {
    const asked = digests.flatMap((d, i) => (isSmall(d) && d.size > 0 ? [i] : []));
    const found = await this.index.smallBlobs(asked.map((i) => digests[i]!));
    const out = new Array<SmallLookup | undefined>(digests.length);
    asked.forEach((i, k) => (out[i] = found[k]));
    return out;
  }

  /** Streams a blob known only by its hash (the Bazel HTTP cache has no sizes); null if absent. */
  async readByHash(hash: string, offset = 0, length?: number): Promise<(BlobRead & { size: number }) | null> {
    if (hash === EMPTY_SHA256) return { body: new Blob([]).stream(), length: 0, size: 0 };
    // No size to tell a small blob by: the index first (one call, and the whole answer for most
    // blobs by count), then R2.
    const small = await this.smallByHash(hash);
    if (small && !(small instanceof ConnectError)) {
      const end = length === undefined ? small.size : Math.min(small.size, offset + length);
      return { body: bytesStream(small.data.subarray(offset, end)), length: Math.max(0, end - offset), size: small.size };
    }
    const startedAt = Date.now();
    const obj = await r2Read(hash, this.env.CAS.get(this.key(hash), { range: length === undefined ? { offset } : { offset, length } }));
    if (!obj) {
      if (small instanceof ConnectError) throw small;
      await this.heal(hash, startedAt);
      return null;
    }
    const body = "body" in obj ? obj.body : new Blob([]).stream();
    const len = length === undefined ? obj.size - offset : Math.min(length, obj.size - offset);
    return { body, length: Math.max(0, len), size: obj.size };
  }

  /** The size of a stored blob, by hash; null if absent. */
  async sizeOf(hash: string): Promise<number | null> {
    if (hash === EMPTY_SHA256) return 0;
    const small = await this.smallByHash(hash);
    if (small && !(small instanceof ConnectError)) return small.size;
    const startedAt = Date.now();
    const head = await r2Read(hash, this.env.CAS.head(this.key(hash)));
    if (!head && small instanceof ConnectError) throw small;
    if (!head) await this.heal(hash, startedAt);
    return head?.size ?? null;
  }

  /**
   * The index's small blob for a hash; null: it holds none; a ConnectError: it could not be asked.
   * A large blob is then still read from R2, and only a blob found nowhere gets that error
   * (UNAVAILABLE, or the index's own verdict such as a misconfigured shard count), not NOT_FOUND:
   * it may be a small one.
   */
  private async smallByHash(hash: string): Promise<{ size: number; data: Uint8Array } | null | ConnectError> {
    try {
      return await this.index.smallBlob(hash);
    } catch (e) {
      if (e instanceof ConnectError) return e;
      const reason = e instanceof Error ? e.message : String(e);
      return new ConnectError(`blob ${hash}: the CAS index could not be asked for it (${reason}) and R2 does not hold it; try again`, Code.Unavailable);
    }
  }

  /**
   * Stores a blob from a stream of exactly d.size bytes with SHA-256 d.hash. R2 checks the hash
   * before the object becomes visible; FixedLengthStream checks the size. Throws INVALID_ARGUMENT
   * on a mismatch, and nothing is stored. `sized`: the stream is already known to carry exactly
   * d.size bytes (an HTTP body whose Content-Length is the size), so R2 reads it directly, with
   * no JavaScript between the socket and the store.
   */
  async write(d: BlobDigest, body: ReadableStream<Uint8Array>, opts: { sized?: boolean } = {}): Promise<void> {
    if (isEmptyBlob(d)) {
      await drainExpectingEmpty(body);
      return;
    }
    if (isSmall(d)) {
      let data: Uint8Array;
      try {
        data = await readSmallBody(d, body);
        await checkSha256(d, data);
      } catch (e) {
        throw writeFailure(d, e);
      }
      return this.index.addSmall([{ d, data }]);
    }
    if (opts.sized) {
      try {
        await this.env.CAS.put(this.key(d.hash), body, { sha256: d.hash });
      } catch (e) {
        throw writeFailure(d, e);
      }
      await this.index.add([d]);
      return;
    }
    const sized = new FixedLengthStream(d.size);
    let counted = 0;
    const counter = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        counted += chunk.byteLength;
        if (counted > d.size) throw new DigestMismatch(`more than the ${d.size} bytes the digest declares`);
        ctl.enqueue(chunk);
      },
      flush() {
        if (counted !== d.size) throw new DigestMismatch(`${counted} bytes where the digest declares ${d.size}`);
      },
    });
    // A put that fails without reading its stream (R2 refusing it outright) must also stop the
    // pipe, which would otherwise wait for a reader forever.
    const stop = new AbortController();
    const piped = body.pipeThrough(counter).pipeTo(sized.writable, { signal: stop.signal });
    const put = this.env.CAS.put(this.key(d.hash), sized.readable, { sha256: d.hash }).catch((e: unknown) => {
      stop.abort(e);
      throw e;
    });
    const [p, w] = await Promise.allSettled([piped, put]);
    if (p.status === "rejected") throw writeFailure(d, p.reason);
    if (w.status === "rejected") throw writeFailure(d, w.reason);
    await this.index.add([d]);
  }

  /**
   * Stores blobs held in memory (batch requests), each verified (by R2, or here for small blobs)
   * and refused on its own; those that landed are recorded in the index in one call per shard,
   * not one per blob. Resolves with each blob's error, or undefined where it was stored.
   */
  async writeMany(blobs: readonly { d: BlobDigest; data: Uint8Array }[]): Promise<(unknown | undefined)[]> {
    const landed: BlobDigest[] = [];
    const small: { d: BlobDigest; data: Uint8Array }[] = [];
    const errors = await mapLimit(blobs, 8, async ({ d, data }) => {
      try {
        if (data.byteLength !== d.size) {
          throw invalidArgument(`blob ${d.hash}/${d.size}: ${data.byteLength} bytes where the digest declares ${d.size}`);
        }
        if (isEmptyBlob(d)) return undefined;
        if (isSmall(d)) {
          await checkSha256(d, data).catch((e: unknown) => {
            throw writeFailure(d, e);
          });
          small.push({ d, data });
          return undefined;
        }
        await this.env.CAS.put(this.key(d.hash), data, { sha256: d.hash }).catch((e: unknown) => {
          throw writeFailure(d, e);
        });
        landed.push(d);
        return undefined;
      } catch (e) {
        return e;
      }
    });
    await Promise.all([this.index.add(landed), this.index.addSmall(small)]);
    return errors;
  }
}

/** An R2 read that could not start (R2 unreachable or failing): UNAVAILABLE, retry. */
function r2Read<T>(hash: string, call: Promise<T>): Promise<T> {
  return call.catch((e: unknown) => Promise.reject(unavailableFrom(`blob ${hash}: R2 could not be read`, e)));
}

/** Why a write failed, as the client is told: its data was wrong (INVALID_ARGUMENT) or storing it failed (UNAVAILABLE). */
function writeFailure(d: BlobDigest, reason: unknown): ConnectError {
  // Already a client-facing verdict (e.g. a body that is not valid zstd): keep its reason.
  if (reason instanceof ConnectError) return reason;
  const text = String((reason as Error)?.message ?? reason);
  if (reason instanceof DigestMismatch) return invalidArgument(`blob ${d.hash}/${d.size}: ${text}; nothing was stored`);
  if (/10037|checksum|SHA-256/i.test(text)) {
    return invalidArgument(`blob ${d.hash}/${d.size}: the data does not hash to ${d.hash}; nothing was stored`);
  }
  if (/length|bytes/i.test(text)) return invalidArgument(`blob ${d.hash}/${d.size}: size does not match the digest; nothing was stored`);
  // The client's body broke off (or R2 could not be reached): retryable, not an internal fault.
  if (/connection lost|disconnected/i.test(text)) return unavailableFrom(`blob ${d.hash}/${d.size}: the upload broke off`, reason, "nothing was stored");
  // Anything else is R2 (or whatever fed the body) failing, not the client's data: retryable too.
  return unavailableFrom(`blob ${d.hash}/${d.size}: storing it failed`, reason, "nothing was stored");
}

const bytesStream = (data: Uint8Array): ReadableStream<Uint8Array> => new Blob([data]).stream();

async function drainExpectingEmpty(body: ReadableStream<Uint8Array>) {
  const n = await drain(body);
  if (n !== 0) throw invalidArgument(`the empty blob was sent with ${n} bytes`);
}
