// FetchBlob from origin: downloads an http(s) URL into the CAS. A URL in a request body is
// untrusted, so Kiln only connects to hosts the operator listed in ASSET_FETCH_ALLOW (none by
// default), and checks every redirect hop against the same list. A body of declared length is
// streamed, never held: with a single sha256 in checksum.sri it goes straight into one R2 put that
// R2 verifies; otherwise into a staging object that is hashed and, once the checksums match,
// copied under its SHA-256 (R2 has no rename), then deleted either way. A body without a length
// (chunked: GitHub's archives are) is held only if it is short (one 8 MiB part); a longer one goes
// the same two ways through an R2 multipart upload hashed on the way (asset-unsized.ts).
// Downloads stop at ASSET_FETCH_MAX_BYTES, a declared length over it before a byte is read.
// Failures outside Kiln's control (the origin's answer, its connection, the content, the timeout,
// the size) are answered, as the spec says, as a status in the response, and the caller tries its
// next URI; Kiln's own storage failing (R2, the CAS index) is not the origin's fault and is
// thrown: the RPC fails UNAVAILABLE, to retry.
import { Code, ConnectError } from "@connectrpc/connect";
import { unavailableFrom } from "../errors.ts";
import type { AssetQualifiers, Checksums, SriAlgorithm } from "./asset-qualifiers.ts";
import { base64ToHex, checksumsOf, hexToBase64, sriSatisfied } from "./asset-qualifiers.ts";
import { assetFetchMaxBytes } from "../config.ts";
import { dropStaged, getStaged, newStagingKey, putStaged, startStagedUpload } from "../storage/asset-staging.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import type { BlobDigest } from "../storage/digest.ts";
import { PART_SIZE } from "../storage/upload.ts";
import { OriginBroke, PartReader, TooLarge, partBytes, uploadUnsized, type Part } from "./asset-unsized.ts";

/** Redirects followed, each to an allowed host. */
const MAX_REDIRECTS = 5;

/**
 * A download's outcome. `final`: the same request fails the same way whatever the origin does
 * next (a body over Kiln's own limit), so a client's retry is only another full download.
 */
export type OriginResult = { ok: true; digest: BlobDigest; checksums: Checksums } | { ok: false; code: Code; message: string; final?: boolean };

const fail = (code: Code, message: string): OriginResult => ({ ok: false, code, message });

/**
 * An entry `host:port` allows that port; a bare `host` only the scheme's default port (URL.port is
 * then ""), so listing a web server does not open its host's other services (a database, an
 * admin port) to requests Kiln makes on a client's behalf.
 */
function allowed(url: URL, allow: Set<string>): boolean {
  // URL drops a default port (https://h:443/ has port ""): `h:443` is written out here to match it.
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return allow.has(`${url.hostname}:${port}`) || (url.port === "" && allow.has(url.hostname));
}

export const isFetchableUri = (uri: string) => /^https?:\/\//i.test(uri);

export interface OriginRequest {
  /** Hosts (or host:port) Kiln may connect to (ASSET_FETCH_ALLOW). */
  allow: Set<string>;
  /** The whole fetch's end: the RPC's, or its `timeout`. */
  signal: AbortSignal;
  /** The header qualifiers' headers for this URI; they go to the URI's origin only. */
  headers?: Headers;
  /** How long the origin may take to answer (redirects included) before this URI is given up. */
  answerWithinMs?: number;
  /** The most bytes downloaded (ASSET_FETCH_MAX_BYTES unless given). */
  maxBytes?: number;
}

/** Downloads `uri` into the CAS, verifying the qualifiers; never stores content that fails them. */
export async function fetchFromOrigin(store: BlobStore, uri: string, q: AssetQualifiers, { allow, signal: whole, headers, answerWithinMs, maxBytes = assetFetchMaxBytes() }: OriginRequest): Promise<OriginResult> {
  let url = new URL(uri);
  const sent = new Headers(headers);
  // The answer's own limit ends once the response has arrived: the body then has all of `whole`.
  const unanswered = new AbortController();
  const timer = answerWithinMs === undefined ? undefined : setTimeout(() => unanswered.abort(), answerWithinMs);
  const signal = AbortSignal.any([whole, unanswered.signal]);
  let res: Response;
  try {
    for (let hop = 0; ; hop++) {
      if (url.protocol !== "http:" && url.protocol !== "https:") return fail(Code.PermissionDenied, `redirected to ${url.protocol} URL; only http(s) is fetched`);
      if (!allowed(url, allow)) {
        return fail(Code.PermissionDenied, `host ${url.host} is not in ASSET_FETCH_ALLOW; Kiln fetches only from the hosts its operator allows`);
      }
      // The bytes as the origin stores them: a decoded body would not match its Content-Length.
      sent.set("accept-encoding", "identity");
      res = await fetch(url, { redirect: "manual", signal, headers: sent });
      const location = res.headers.get("location");
      if (res.status < 300 || res.status >= 400 || !location) break;
      await res.body?.cancel();
      if (hop === MAX_REDIRECTS) return fail(Code.Unavailable, `more than ${MAX_REDIRECTS} redirects from ${uri}`);
      const next = new URL(location, url);
      // The headers are credentials for the origin they were given for (scheme, host and port):
      // a redirect to another origin goes on without any of them, for the rest of the chain, as
      // browsers and curl drop Authorization. They are the only headers Kiln adds besides its own.
      if (next.origin !== url.origin) for (const name of [...sent.keys()]) sent.delete(name);
      url = next;
    }
  } catch (e) {
    if (unanswered.signal.aborted && !whole.aborted) {
      return fail(Code.DeadlineExceeded, `fetching ${url.href}: no answer within ${answerWithinMs} ms, this URI's share of the timeout; nothing was stored`);
    }
    return failure(e, whole, `fetching ${url.href}`);
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok) {
    await res.body?.cancel();
    return fail(codeOfOriginStatus(res.status), `${url.href} answered HTTP ${res.status}`);
  }
  const type = (res.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (q.resourceType !== undefined && q.resourceType.toLowerCase() !== type) {
    await res.body?.cancel();
    return fail(Code.Aborted, `resource_type "${q.resourceType}" was asked for; ${url.href} is "${type}"`);
  }
  return storeBody(store, res, q, maxBytes, (e) => failure(e, whole, `downloading ${url.href}`));
}

/** A download: the origin's body of declared length, or a short body read whole (no length, or encoded anyway). */
type Payload = { origin: OriginBody; length: number } | { bytes: Uint8Array; length: number };

/** The status for the origin's body failing to arrive (`failure` bound to the download). */
type OriginFailed = (e: unknown) => OriginResult;

const tooLarge = (max: number, what: string): OriginResult => ({
  ok: false,
  code: Code.ResourceExhausted,
  message: `${what}, over ASSET_FETCH_MAX_BYTES (${max}); nothing was stored`,
  final: true,
});

/** checksum.sri when it is a single sha256: the content's CAS key is known before it arrives. */
const onlySha256 = (q: AssetQualifiers) => (q.sri?.length === 1 && q.sri[0]!.algorithm === "sha256" ? q.sri[0]! : undefined);

async function storeBody(store: BlobStore, res: Response, q: AssetQualifiers, maxBytes: number, originFailed: OriginFailed): Promise<OriginResult> {
  const encoded = (res.headers.get("content-encoding") ?? "identity").toLowerCase() !== "identity";
  const declared = encoded ? NaN : Number(res.headers.get("content-length") ?? NaN);
  let payload: Payload;
  if (res.body && Number.isSafeInteger(declared) && declared >= 0) {
    if (declared > maxBytes) {
      await res.body.cancel();
      return tooLarge(maxBytes, `the origin declares ${declared} bytes (Content-Length)`);
    }
    payload = { origin: new OriginBody(res.body, declared), length: declared };
  } else {
    // No length: the first part says whether the body is short enough to hold for one put.
    const rest = new PartReader(res.body ?? new Blob([]).stream(), maxBytes);
    let first: Part;
    try {
      first = await rest.next(PART_SIZE);
    } catch (e) {
      return unsizedFailed(e, originFailed);
    }
    if (!rest.ended) return storeUnsized(store, first, rest, q, originFailed);
    const bytes = partBytes(first);
    payload = { bytes, length: bytes.byteLength };
  }
  const only = onlySha256(q);
  if (only) return storeVerifiedByR2(store, payload, { hash: base64ToHex(only.base64), size: payload.length }, originFailed);
  return storeStaged(store, payload, q, originFailed);
}

/** Reading a body without a length stopped: the origin's failure, or the limit, as a status; R2's is thrown. */
function unsizedFailed(e: unknown, originFailed: OriginFailed): OriginResult {
  if (e instanceof OriginBroke) return originFailed(e.error);
  if (e instanceof TooLarge) return tooLarge(e.max, `the origin sent no Content-Length and more than ${e.max} bytes`);
  throw e;
}

/**
 * A body without a length, longer than a part, through an R2 multipart upload hashed on the way:
 * with a single sha256 in checksum.sri, straight under its CAS key, completed only if it hashes to
 * it; otherwise staged, completed only if it satisfies checksum.sri, then stored as storeStaged
 * stores (the completed staging object has a known length and hash).
 */
async function storeUnsized(store: BlobStore, first: Part, rest: PartReader, q: AssetQualifiers, originFailed: OriginFailed): Promise<OriginResult> {
  const only = onlySha256(q);
  if (only) {
    const key = store.key(base64ToHex(only.base64));
    try {
      const up = await uploadUnsized(store.env.CAS, {
        key,
        start: () => store.env.CAS.createMultipartUpload(key),
        first,
        rest,
        algorithms: ["sha256"],
        accept: (c) => c.sha256 === only.base64,
      });
      if (!up.kept) return mismatch(up.checksums);
      const d: BlobDigest = { hash: base64ToHex(only.base64), size: up.size };
      await store.index.add([d]);
      return { ok: true, digest: d, checksums: up.checksums };
    } catch (e) {
      return unsizedFailed(e, originFailed);
    }
  }
  const staging = newStagingKey(store);
  try {
    const up = await uploadUnsized(store.env.CAS, {
      key: staging,
      start: () => startStagedUpload(store, staging),
      first,
      rest,
      algorithms: sriAlgorithms(q),
      accept: (c) => !q.sri || sriSatisfied(q.sri, c),
    });
    if (!up.kept) return mismatch(up.checksums);
    return await keepStaged(store, staging, { hash: base64ToHex(up.checksums.sha256!), size: up.size }, up.checksums);
  } catch (e) {
    return unsizedFailed(e, originFailed);
  } finally {
    await dropStaged(store, staging);
  }
}

/** sha256 (the CAS key) and every algorithm checksum.sri names. */
const sriAlgorithms = (q: AssetQualifiers) => [...new Set<SriAlgorithm>(["sha256", ...(q.sri ?? []).map((h) => h.algorithm)])];

function mismatch(checksums: Checksums): OriginResult {
  const got = Object.entries(checksums).map(([a, b]) => `${a}-${b}`).join(" ");
  return fail(Code.Aborted, `the content does not match checksum.sri (it hashes to ${got}); nothing was stored`);
}

/**
 * The origin's body as R2 takes it (a stream of its declared length, which the HTTP framing
 * enforces), noting whether reading the origin failed. When an R2 put of it fails, that note
 * tells the origin's fault (a broken connection, the timeout) from R2's own: it is taken where
 * the origin is read, before anything downstream can see the error, so it is set by the time the
 * put fails. The price is one JavaScript read per chunk between the socket and R2.
 */
class OriginBody {
  /** Set when reading the origin failed, with its error. */
  broke: { error: unknown } | undefined;
  readonly stream: ReadableStream<Uint8Array>;
  private readonly halt: (reason: unknown) => void;

  constructor(body: ReadableStream<Uint8Array>, length: number) {
    const reader = body.getReader();
    const sized = new FixedLengthStream(length);
    const writer = sized.writable.getWriter();
    this.stream = sized.readable;
    const halt = (reason: unknown) => {
      reader.cancel(reason).catch(() => {});
      writer.abort(reason).catch(() => {});
    };
    this.halt = halt;
    // Pumped by hand, each write awaited: the next read waits until R2 has taken the chunk before
    // it, so one chunk is held at a time. (pipeTo into the FixedLengthStream kept reading the
    // origin ahead of R2, and workerd grew by the size of the download.)
    void (async () => {
      try {
        for (;;) {
          let r: ReadableStreamReadResult<Uint8Array>;
          try {
            r = await reader.read();
          } catch (e) {
            this.broke = { error: e };
            throw e;
          }
          if (r.done) break;
          await writer.write(r.value);
        }
        await writer.close();
      } catch (e) {
        halt(e);
      }
    })();
  }

  /** Ends the copy and the origin's connection (a put that failed without reading would leave both waiting). */
  stop(): void {
    this.halt(new Error("the download was stopped"));
  }
}

/** Streams the payload into `put`; an origin that breaks off on the way is its status, R2 failing is thrown. */
async function putPayload(
  payload: Payload,
  put: (body: ReadableStream<Uint8Array> | Uint8Array) => Promise<void>,
  originFailed: OriginFailed,
): Promise<OriginResult | null> {
  if (!("origin" in payload)) {
    await put(payload.bytes);
    return null;
  }
  try {
    await put(payload.origin.stream);
    return null;
  } catch (e) {
    if (payload.origin.broke) return originFailed(payload.origin.broke.error);
    throw e;
  } finally {
    payload.origin.stop();
  }
}

/** The SRI names one sha256: the CAS write under that hash is the check (R2 verifies it). */
async function storeVerifiedByR2(store: BlobStore, payload: Payload, d: BlobDigest, originFailed: OriginFailed): Promise<OriginResult> {
  try {
    const write = (body: ReadableStream<Uint8Array> | Uint8Array) =>
      body instanceof Uint8Array ? store.write(d, new Blob([body]).stream()) : store.write(d, body, { sized: true });
    const broke = await putPayload(payload, write, originFailed);
    if (broke) return broke;
  } catch (e) {
    if (e instanceof ConnectError && e.code === Code.InvalidArgument) {
      return fail(Code.Aborted, `the content does not match checksum.sri sha256-${hexToBase64(d.hash)} (${e.rawMessage}); nothing was stored`);
    }
    // store.write's own verdict on R2 or the CAS index failing: UNAVAILABLE.
    throw e;
  }
  return { ok: true, digest: d, checksums: { sha256: hexToBase64(d.hash) } };
}

/**
 * Stores the download as a staging object, hashes it from there (natively: stream to DigestStream,
 * no JavaScript per chunk) and copies it under its SHA-256 if it satisfies checksum.sri. Past the
 * staging put, every failure is Kiln's storage (UNAVAILABLE).
 */
async function storeStaged(store: BlobStore, payload: Payload, q: AssetQualifiers, originFailed: OriginFailed): Promise<OriginResult> {
  const staging = newStagingKey(store);
  try {
    const broke = await putPayload(payload, (body) => putStaged(store, staging, body), originFailed);
    if (broke) return broke;
    const staged = await getStaged(store, staging, "hashed");
    const checksums = await checksumsOf(staged.body, sriAlgorithms(q)).catch((e: unknown) => {
      throw unavailableFrom("the staged download could not be read back from R2", e, "nothing was stored; retry");
    });
    if (q.sri && !sriSatisfied(q.sri, checksums)) return mismatch(checksums);
    return await keepStaged(store, staging, { hash: base64ToHex(checksums.sha256!), size: staged.size }, checksums);
  } finally {
    // Only space is lost if it stays; a fetch that worked (or its real failure) must not become
    // this error.
    await dropStaged(store, staging);
  }
}

/** A staged download whose checksums passed, `d` by its SHA-256: copied into the CAS unless there already. */
async function keepStaged(store: BlobStore, staging: string, d: BlobDigest, checksums: Checksums): Promise<OriginResult> {
  // Already in the CAS: touched (not just asked), so it lives as long as the answer's expires_at says.
  const present = (await store.index.missing([d], true)).length === 0;
  if (!present) await store.write(d, (await getStaged(store, staging, "stored")).body, { sized: true });
  return { ok: true, digest: d, checksums };
}

function codeOfOriginStatus(status: number): Code {
  if (status === 404 || status === 410) return Code.NotFound;
  if (status === 401 || status === 403) return Code.PermissionDenied;
  if (status === 429) return Code.ResourceExhausted;
  return Code.Unavailable;
}

/** The status for the origin failing (never Kiln's storage: that is thrown, not answered). */
function failure(e: unknown, signal: AbortSignal, doing: string): OriginResult {
  if (signal.aborted) return fail(Code.DeadlineExceeded, `${doing}: the fetch timeout passed; nothing was stored`);
  return fail(Code.Unavailable, `${doing}: ${String((e as Error)?.message ?? e)}; nothing was stored`);
}
