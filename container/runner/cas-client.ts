// The CAS as the runner reaches it: the worker's blob HTTP surface (GET .../blobs/{hash}/{size},
// PUT .../uploads/{uuid}/blobs/{hash}/{size}) and FindMissingBlobs over Connect JSON, each call
// carrying the lease token of the action it serves. Blobs stream between the network and files; only small
// messages (Action, Command, Directory) are read into memory. A blob over the worker's
// max_cas_blob_size_bytes (what one request carries past the edge) goes up as FastCDC chunks and a
// SpliceBlob.
import { randomUUID, createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import http from "node:http";
import https from "node:https";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { blobKey, isEmptyBlob, missingSubject, type BlobDigest } from "../../src/shared/digest.ts";
import { readResourceName, resourcePath, writeResourceName } from "../../src/shared/resource-names.ts";
import { chunkPlanOf, chunkStream, type ChunkPlan } from "../../src/shared/fastcdc.ts";
import { Code, ConnectError } from "./errors.ts";
import { digestOfBytes } from "./hash.ts";
import type { Limiter } from "./limit.ts";

export interface CasTarget {
  /** The worker's base URL, e.g. http://127.0.0.1:8787 (a path prefix is kept): the runner's own --url. */
  casUrl: string;
  instanceName: string;
  /** The lease token of the action, as `Bearer ...`. */
  authorization: string;
}

/** A blob to upload: from a file (streamed) or, for small messages such as Trees, from memory. */
export type BlobSource = { digest: BlobDigest; path: string } | { digest: BlobDigest; bytes: Uint8Array };

export class BlobNotFoundError extends Error {
  constructor(readonly digest: BlobDigest) {
    super(`${missingSubject(digest)} is not in the CAS`);
  }
}

/** A failure worth another attempt: the network, a 5xx, or a blob that arrived damaged. */
class TransientError extends Error {}

const agents = {
  "http:": new http.Agent({ keepAlive: true, maxSockets: 64 }),
  "https:": new https.Agent({ keepAlive: true, maxSockets: 64 }),
};

const ATTEMPTS = 3;
const IDLE_TIMEOUT_MS = 60_000;
/** Largest message (Action, Command, Directory) read into memory. */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Digests per FindMissingBlobs call (the worker takes 100,000; this keeps bodies small). */
const FIND_MISSING_BATCH = 5000;
/** Chunks of a chunked upload are checked and sent this many bytes at a time. */
const CHUNK_BATCH_BYTES = 8 * 1024 * 1024;
/** Below this no worker limit is expected, and Capabilities is not asked. */
const MIN_CHUNKED_SIZE = 1024 * 1024;

/** Each worker's answer to "which blobs go up as chunks", by base URL. */
const chunkPlans = new Map<string, Promise<ChunkPlan | null>>();
/** KILN_CHUNK_ABOVE_BYTES: chunk blobs over this size whatever the worker's limit (0: never). */
function chunkAboveOverride(): number | undefined {
  const v = process.env.KILN_CHUNK_ABOVE_BYTES;
  return v === undefined || v === "" || !Number.isSafeInteger(Number(v)) ? undefined : Number(v);
}

interface JsonCacheCapabilities {
  maxCasBlobSizeBytes?: string;
  splitBlobSupport?: boolean;
  spliceBlobSupport?: boolean;
  fastCdc2020Params?: { avgChunkSizeBytes?: string; seed?: number };
}

const jsonDigest = (d: BlobDigest) => ({ hash: d.hash, sizeBytes: String(d.size) });

interface SendOptions {
  method: "GET" | "PUT" | "POST";
  headers?: Record<string, string>;
  /** A fresh body stream per attempt, or bytes. */
  body?: Uint8Array | (() => Readable);
  signal?: AbortSignal;
}

function send(url: URL, o: SendOptions): Promise<http.IncomingMessage> {
  const mod = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, {
      method: o.method,
      headers: { "user-agent": "kiln-runner", ...o.headers },
      agent: agents[url.protocol as "http:" | "https:"],
      signal: o.signal,
    });
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new TransientError(`no answer from ${url.origin} in ${IDLE_TIMEOUT_MS / 1000} s`)));
    req.on("response", (res) => {
      // Errors reach whoever reads the body; without a listener a late reset would crash the process.
      res.on("error", () => {});
      resolve(res);
    });
    req.on("error", (e) => reject(o.signal?.aborted || e instanceof TransientError ? e : new TransientError(`${o.method} ${url.pathname}: ${e.message}`)));
    if (o.body === undefined) req.end();
    else if (o.body instanceof Uint8Array) req.end(o.body);
    else {
      const stream = o.body();
      stream.on("error", (e) => req.destroy(e));
      stream.pipe(req);
    }
  });
}

/** The start of an error body, for messages. */
async function errorText(res: http.IncomingMessage): Promise<string> {
  let text = "";
  for await (const chunk of res as AsyncIterable<Buffer>) if (text.length < 2000) text += chunk.toString("utf8");
  try {
    const body = JSON.parse(text) as { error?: { message?: string }; message?: string };
    text = body.error?.message ?? body.message ?? text;
  } catch {
    // not JSON: keep the text
  }
  return `HTTP ${res.statusCode}${text ? `: ${text.slice(0, 500)}` : ""}`;
}

async function failure(res: http.IncomingMessage, what: string): Promise<Error> {
  const message = `${what}: ${await errorText(res)}`;
  const status = res.statusCode ?? 0;
  if (status >= 500) return new TransientError(message);
  if (status === 401) return new ConnectError(`the CAS refused ${message}`, Code.Unauthenticated);
  if (status === 403) return new ConnectError(`the CAS refused ${message}`, Code.PermissionDenied);
  return new ConnectError(`the CAS refused ${message}`, Code.Unavailable);
}

async function withRetries<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof TransientError) || signal?.aborted) throw e;
      if (attempt >= ATTEMPTS) throw new ConnectError(`CAS unreachable after ${ATTEMPTS} attempts: ${e.message}`, Code.Unavailable);
      await new Promise((r) => setTimeout(r, 250 * 4 ** (attempt - 1)));
    }
  }
}

/** Hashes and counts what passes through. */
function hasher() {
  const hash = createHash("sha256");
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      size += chunk.byteLength;
      done(null, chunk);
    },
  });
  return { stream, digest: (): BlobDigest => ({ hash: hash.digest("hex"), size }) };
}

export class CasClient {
  private readonly base: string;

  constructor(
    private readonly target: CasTarget,
    private readonly limiter: Limiter,
  ) {
    this.base = target.casUrl.replace(/\/+$/, "");
  }

  private headers(extra?: Record<string, string>): Record<string, string> {
    return { authorization: this.target.authorization, ...extra };
  }

  private readUrl = (d: BlobDigest) => new URL(`${this.base}/${resourcePath(readResourceName(this.target.instanceName, d))}`);

  private async get(d: BlobDigest, signal?: AbortSignal): Promise<http.IncomingMessage> {
    const res = await send(this.readUrl(d), { method: "GET", headers: this.headers(), signal });
    if (res.statusCode === 200) return res;
    if (res.statusCode === 404) {
      res.resume();
      throw new BlobNotFoundError(d);
    }
    throw await failure(res, `GET ${missingSubject(d)}`);
  }

  /** A small blob (a proto message) in memory, checked against its digest. */
  readBytes(d: BlobDigest, signal?: AbortSignal): Promise<Uint8Array> {
    if (isEmptyBlob(d)) return Promise.resolve(new Uint8Array(0));
    if (d.size > MAX_MESSAGE_BYTES) {
      return Promise.reject(new ConnectError(`${missingSubject(d)} is too large for a message (over ${MAX_MESSAGE_BYTES} bytes)`, Code.InvalidArgument));
    }
    return this.limiter.run(() =>
      withRetries(async () => {
        const res = await this.get(d, signal);
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of res as AsyncIterable<Buffer>) {
          size += chunk.byteLength;
          if (size > d.size) break;
          chunks.push(chunk);
        }
        const bytes = Buffer.concat(chunks);
        const got = { hash: createHash("sha256").update(bytes).digest("hex"), size };
        if (blobKey(got) !== blobKey(d)) throw new TransientError(`GET ${missingSubject(d)} returned ${blobKey(got)}`);
        return bytes;
      }, signal),
    );
  }

  /** Streams a blob into a new file at `dest` and checks it against its digest. */
  readToFile(d: BlobDigest, dest: string, signal?: AbortSignal): Promise<void> {
    return this.limiter.run(() =>
      withRetries(async () => {
        const res = await this.get(d, signal);
        const h = hasher();
        try {
          await pipeline(res, h.stream, createWriteStream(dest), { signal });
        } catch (e) {
          if (signal?.aborted) throw e;
          throw new TransientError(`GET ${missingSubject(d)}: ${(e as Error).message}`);
        }
        const got = h.digest();
        if (blobKey(got) !== blobKey(d)) throw new TransientError(`GET ${missingSubject(d)} returned ${blobKey(got)}`);
      }, signal),
    );
  }

  /** A ContentAddressableStorage or Capabilities method over Connect JSON. */
  private async callJson<T>(method: string, message: object): Promise<T> {
    const body = Buffer.from(JSON.stringify({ instanceName: this.target.instanceName, ...message }));
    const url = new URL(`${this.base}/build.bazel.remote.execution.v2.${method}`);
    return this.limiter.run(() =>
      withRetries(async () => {
        const res = await send(url, {
          method: "POST",
          headers: this.headers({ "content-type": "application/json", "content-length": String(body.byteLength) }),
          body,
        });
        if (res.statusCode !== 200) throw await failure(res, method.slice(method.indexOf("/") + 1));
        let text = "";
        for await (const chunk of res as AsyncIterable<Buffer>) text += chunk.toString("utf8");
        return JSON.parse(text) as T;
      }),
    );
  }

  /** The digests the CAS does not have (FindMissingBlobs). */
  async findMissing(digests: BlobDigest[]): Promise<BlobDigest[]> {
    const missing: BlobDigest[] = [];
    for (let i = 0; i < digests.length; i += FIND_MISSING_BATCH) {
      const batch = digests.slice(i, i + FIND_MISSING_BATCH);
      const answer = await this.callJson<{ missingBlobDigests?: { hash: string; sizeBytes?: string }[] }>(
        "ContentAddressableStorage/FindMissingBlobs",
        { blobDigests: batch.map(jsonDigest) },
      );
      for (const m of answer.missingBlobDigests ?? []) missing.push({ hash: m.hash, size: Number(m.sizeBytes ?? 0) });
    }
    return missing;
  }

  /**
   * Blobs over the worker's max_cas_blob_size_bytes go up as chunks and SpliceBlob (asked once per
   * worker; a worker that cannot say, or has no limit, gets whole blobs).
   */
  private chunkPlan(): Promise<ChunkPlan | null> {
    let plan = chunkPlans.get(this.base);
    if (!plan) {
      plan = this.callJson<{ cacheCapabilities?: JsonCacheCapabilities }>("Capabilities/GetCapabilities", {}).then(
        ({ cacheCapabilities: c = {} }) =>
          chunkPlanOf(
            {
              maxCasBlobSize: Number(c.maxCasBlobSizeBytes ?? 0),
              splitAndSplice: Boolean(c.splitBlobSupport && c.spliceBlobSupport),
              avgChunkSize: Number(c.fastCdc2020Params?.avgChunkSizeBytes ?? 0),
              seed: c.fastCdc2020Params?.seed ?? 0,
            },
            chunkAboveOverride(),
          ),
        () => {
          // A worker that cannot say gets whole blobs; it is asked again a minute later.
          setTimeout(() => chunkPlans.delete(this.base), 60_000).unref();
          return null;
        },
      );
      chunkPlans.set(this.base, plan);
    }
    return plan;
  }

  /**
   * A blob too large for one request: cut with FastCDC as it is read, the chunks the CAS lacks
   * uploaded (a batch at a time, so only a few MiB are held), then SpliceBlob, which verifies it.
   */
  private async writeChunked(src: BlobSource, plan: ChunkPlan): Promise<void> {
    const source: Iterable<Uint8Array> | AsyncIterable<Uint8Array> =
      "bytes" in src ? [src.bytes] : (createReadStream(src.path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>);
    const chunks: BlobDigest[] = [];
    let batch: BlobSource[] = [];
    let batchBytes = 0;
    const flush = async () => {
      const missing = new Set((await this.findMissing(batch.map((b) => b.digest))).map(blobKey));
      await Promise.all(batch.filter((b) => missing.has(blobKey(b.digest))).map((b) => this.put(b)));
      batch = [];
      batchBytes = 0;
    };
    for await (const data of chunkStream(source, plan.cdc)) {
      const digest = digestOfBytes(data);
      chunks.push(digest);
      batch.push({ digest, bytes: data });
      batchBytes += data.byteLength;
      if (batchBytes >= CHUNK_BATCH_BYTES) await flush();
    }
    await flush();
    await this.callJson("ContentAddressableStorage/SpliceBlob", {
      blobDigest: jsonDigest(src.digest),
      chunkDigests: chunks.map(jsonDigest),
      chunkingFunction: "FAST_CDC_2020",
    });
  }

  /** Uploads one blob under a fresh upload name, or as chunks when it is over the worker's limit. */
  async write(src: BlobSource): Promise<void> {
    const d = src.digest;
    const plan = d.size > MIN_CHUNKED_SIZE ? await this.chunkPlan() : null;
    if (plan && d.size > plan.above) return this.writeChunked(src, plan);
    return this.put(src);
  }

  /** One PUT of the whole blob. */
  private put(src: BlobSource): Promise<void> {
    const d = src.digest;
    return this.limiter.run(() =>
      withRetries(async () => {
        const url = new URL(`${this.base}/${resourcePath(writeResourceName(this.target.instanceName, randomUUID(), d))}`);
        const res = await send(url, {
          method: "PUT",
          headers: this.headers({ "content-type": "application/octet-stream", "content-length": String(d.size) }),
          body: "bytes" in src ? src.bytes : () => createReadStream(src.path, { highWaterMark: 1024 * 1024 }),
        });
        if (res.statusCode !== 200) throw await failure(res, `PUT ${missingSubject(d)}`);
        res.resume();
      }),
    );
  }

  /** Uploads every blob the CAS lacks (empty blobs always exist); returns how many were sent. */
  async uploadMissing(blobs: Iterable<BlobSource>): Promise<number> {
    const unique = new Map<string, BlobSource>();
    for (const b of blobs) if (!isEmptyBlob(b.digest) && !unique.has(blobKey(b.digest))) unique.set(blobKey(b.digest), b);
    if (unique.size === 0) return 0;
    const missing = await this.findMissing([...unique.values()].map((b) => b.digest));
    await Promise.all(missing.map((d) => unique.get(blobKey(d))).filter((b) => b !== undefined).map((b) => this.write(b)));
    return missing.length;
  }
}
