// FetchBlob from origin: downloads an http(s) URL into the CAS. A URL in a request body is
// untrusted, so Kiln only connects to hosts the operator listed in ASSET_FETCH_ALLOW (none by
// default), and checks every redirect hop against the same list. A body of declared length is
// streamed, never held (one without Content-Length is read whole up to 8 MiB, since R2 needs a
// length): with a single sha256 in checksum.sri it goes straight into one R2 put that R2
// verifies; otherwise into a staging object that is hashed and, once the checksums match, copied
// under its SHA-256 (R2 has no rename), then deleted either way. Failures outside Kiln's control are
// answered, as the spec says, as a status in the response, not as an RPC error.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AssetQualifiers, Checksums, SriAlgorithm } from "./asset-qualifiers.ts";
import { base64ToHex, bytesToBase64, hexToBase64, SRI_ALGORITHMS, sriSatisfied } from "./asset-qualifiers.ts";
import { dropStaged, getStaged, newStagingKey, putStaged } from "../storage/asset-staging.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import type { BlobDigest } from "../storage/digest.ts";

/** Redirects followed, each to an allowed host. */
const MAX_REDIRECTS = 5;
/** A body without Content-Length is read into memory up to this size (R2 needs a length). */
export const MAX_UNSIZED_BYTES = 8 * 1024 * 1024;

export type OriginResult = { ok: true; digest: BlobDigest; checksums: Checksums } | { ok: false; code: Code; message: string };

const fail = (code: Code, message: string): OriginResult => ({ ok: false, code, message });

const allowed = (url: URL, allow: Set<string>) => allow.has(url.host) || allow.has(url.hostname);

export const isFetchableUri = (uri: string) => /^https?:\/\//i.test(uri);

/**
 * Downloads `uri` into the CAS, verifying the qualifiers; never stores content that fails them.
 * `headers` (the header qualifiers', for this URI) go to the URI's origin only.
 */
export async function fetchFromOrigin(
  store: BlobStore,
  uri: string,
  q: AssetQualifiers,
  headers: Headers,
  allow: Set<string>,
  signal: AbortSignal,
): Promise<OriginResult> {
  let url = new URL(uri);
  const sent = new Headers(headers);
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
    return failure(e, signal, `fetching ${url.href}`);
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
  try {
    return await storeBody(store, res, q);
  } catch (e) {
    return failure(e, signal, `downloading ${url.href}`);
  }
}

/** A download: a stream whose length the origin declared, or a short body read whole (no length, or encoded anyway). */
type Payload = { stream: ReadableStream<Uint8Array>; length: number } | { bytes: Uint8Array; length: number };

async function storeBody(store: BlobStore, res: Response, q: AssetQualifiers): Promise<OriginResult> {
  const encoded = (res.headers.get("content-encoding") ?? "identity").toLowerCase() !== "identity";
  const declared = encoded ? NaN : Number(res.headers.get("content-length") ?? NaN);
  let payload: Payload;
  if (res.body && Number.isSafeInteger(declared) && declared >= 0) payload = { stream: res.body, length: declared };
  else {
    const bytes = await readCapped(res.body ?? new Blob([]).stream(), MAX_UNSIZED_BYTES);
    if (!bytes) return fail(Code.ResourceExhausted, `the origin sent no Content-Length and more than ${MAX_UNSIZED_BYTES} bytes; Kiln streams only bodies of known length`);
    payload = { bytes, length: bytes.byteLength };
  }
  const only = q.sri?.length === 1 && q.sri[0]!.algorithm === "sha256" ? q.sri[0]! : undefined;
  if (only) return storeVerifiedByR2(store, payload, { hash: base64ToHex(only.base64), size: payload.length });
  return storeStaged(store, payload, q);
}

/** The SRI names one sha256: the CAS write under that hash is the check (R2 verifies it). */
async function storeVerifiedByR2(store: BlobStore, payload: Payload, d: BlobDigest): Promise<OriginResult> {
  try {
    // A declared length is enforced by the HTTP framing, so R2 may read the socket directly.
    if ("stream" in payload) await store.write(d, payload.stream, { sized: true });
    else await store.write(d, new Blob([payload.bytes]).stream());
  } catch (e) {
    if (e instanceof ConnectError && e.code === Code.InvalidArgument) {
      return fail(Code.Aborted, `the content does not match checksum.sri sha256-${hexToBase64(d.hash)} (${e.rawMessage}); nothing was stored`);
    }
    throw e;
  }
  return { ok: true, digest: d, checksums: { sha256: hexToBase64(d.hash) } };
}

/**
 * Stores the download as a staging object, hashes it from there (natively: stream to DigestStream,
 * no JavaScript per chunk) and copies it under its SHA-256 if it satisfies checksum.sri.
 */
async function storeStaged(store: BlobStore, payload: Payload, q: AssetQualifiers): Promise<OriginResult> {
  const algorithms = [...new Set<SriAlgorithm>(["sha256", ...(q.sri ?? []).map((h) => h.algorithm)])];
  const staging = newStagingKey(store);
  try {
    await putStaged(store, staging, "stream" in payload ? payload.stream : payload.bytes);
    const staged = await getStaged(store, staging, "hashed");
    const checksums = await hashAll(staged.body, algorithms);
    if (q.sri && !sriSatisfied(q.sri, checksums)) {
      const got = Object.entries(checksums).map(([a, b]) => `${a}-${b}`).join(" ");
      return fail(Code.Aborted, `the content does not match checksum.sri (it hashes to ${got}); nothing was stored`);
    }
    const d: BlobDigest = { hash: base64ToHex(checksums.sha256!), size: staged.size };
    if (!(await store.index.has(d))) await store.write(d, (await getStaged(store, staging, "stored")).body, { sized: true });
    return { ok: true, digest: d, checksums };
  } finally {
    // Only space is lost if it stays; a fetch that worked (or its real failure) must not become
    // this error.
    await dropStaged(store, staging);
  }
}

/** The stream's digests (base64) by algorithm, the stream split with tee where more than one. */
async function hashAll(body: ReadableStream<Uint8Array>, algorithms: SriAlgorithm[]): Promise<Checksums> {
  const out: Checksums = {};
  const jobs: Promise<void>[] = [];
  let rest = body;
  algorithms.forEach((a, i) => {
    let mine = rest;
    if (i < algorithms.length - 1) [mine, rest] = rest.tee();
    const ds = new crypto.DigestStream(SRI_ALGORITHMS[a]);
    jobs.push(mine.pipeTo(ds).then(async () => void (out[a] = bytesToBase64(await ds.digest))));
  });
  await Promise.all(jobs);
  return out;
}

/** The body, or null once it passes `cap` bytes. */
async function readCapped(body: ReadableStream<Uint8Array>, cap: number): Promise<Uint8Array | null> {
  const chunks: Uint8Array[] = [];
  const reader = body.getReader();
  for (let n = 0; ; ) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > cap) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  return new Uint8Array(await new Blob(chunks).arrayBuffer());
}

function codeOfOriginStatus(status: number): Code {
  if (status === 404 || status === 410) return Code.NotFound;
  if (status === 401 || status === 403) return Code.PermissionDenied;
  if (status === 429) return Code.ResourceExhausted;
  return Code.Unavailable;
}

function failure(e: unknown, signal: AbortSignal, doing: string): OriginResult {
  if (signal.aborted) return fail(Code.DeadlineExceeded, `${doing}: the fetch timeout passed; nothing was stored`);
  if (e instanceof ConnectError) return fail(e.code, `${doing}: ${e.rawMessage}`);
  return fail(Code.Unavailable, `${doing}: ${String((e as Error)?.message ?? e)}; nothing was stored`);
}
