// FetchBlob from origin: downloads an http(s) URL into the CAS. A URL in a request body is
// untrusted, so Kiln only connects to hosts the operator listed in ASSET_FETCH_ALLOW (none by
// default), and checks every redirect hop against the same list. The body is streamed, never
// held: with a single sha256 in checksum.sri and a Content-Length it goes straight into one R2
// put that R2 verifies; otherwise it is hashed on the way into a staging object, which is copied
// under its hash once the checksums match (R2 has no rename). Failures outside Kiln's control are
// answered, as the spec says, as a status in the response, not as an RPC error.
import { Code, ConnectError } from "@connectrpc/connect";
import type { AssetQualifiers, Checksums, SriAlgorithm } from "./asset-qualifiers.ts";
import { base64ToHex, bytesToBase64, hexToBase64, SRI_ALGORITHMS, sriSatisfied } from "./asset-qualifiers.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import type { BlobDigest } from "../storage/digest.ts";

/** Redirects followed, each to an allowed host. */
const MAX_REDIRECTS = 5;
/** A body without Content-Length is read into memory up to this size (R2 needs a length). */
export const MAX_UNSIZED_BYTES = 8 * 1024 * 1024;

export type OriginResult = { ok: true; digest: BlobDigest; checksums: Checksums } | { ok: false; code: Code; message: string };

const fail = (code: Code, message: string): OriginResult => ({ ok: false, code, message });

/** ASSET_FETCH_ALLOW: hosts, or host:port pairs, separated by commas or spaces. */
export const parseAllowList = (raw: string | undefined) =>
  new Set(
    (raw ?? "")
      .split(/[\s,]+/)
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );

const allowed = (url: URL, allow: Set<string>) => allow.has(url.host) || allow.has(url.hostname);

export const isFetchableUri = (uri: string) => /^https?:\/\//i.test(uri);

/** Downloads `uri` into the CAS, verifying the qualifiers; never stores content that fails them. */
export async function fetchFromOrigin(
  store: BlobStore,
  uri: string,
  q: AssetQualifiers,
  allow: Set<string>,
  signal: AbortSignal,
): Promise<OriginResult> {
  let url = new URL(uri);
  let res: Response;
  try {
    for (let hop = 0; ; hop++) {
      if (url.protocol !== "http:" && url.protocol !== "https:") return fail(Code.PermissionDenied, `redirected to ${url.protocol} URL; only http(s) is fetched`);
      if (!allowed(url, allow)) {
        return fail(Code.PermissionDenied, `host ${url.host} is not in ASSET_FETCH_ALLOW; Kiln fetches only from the hosts its operator allows`);
      }
      res = await fetch(url, { redirect: "manual", signal });
      const location = res.headers.get("location");
      if (res.status < 300 || res.status >= 400 || !location) break;
      await res.body?.cancel();
      if (hop === MAX_REDIRECTS) return fail(Code.Unavailable, `more than ${MAX_REDIRECTS} redirects from ${uri}`);
      url = new URL(location, url);
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

async function storeBody(store: BlobStore, res: Response, q: AssetQualifiers): Promise<OriginResult> {
  const declared = res.headers.get("content-length");
  let body = res.body ?? new Blob([]).stream();
  let length = declared === null ? NaN : Number(declared);
  if (!Number.isSafeInteger(length) || length < 0) {
    const bytes = await readCapped(body, MAX_UNSIZED_BYTES);
    if (!bytes) return fail(Code.ResourceExhausted, `the origin sent no Content-Length and more than ${MAX_UNSIZED_BYTES} bytes; Kiln streams only bodies of known length`);
    body = new Blob([bytes]).stream();
    length = bytes.byteLength;
  }
  const only = q.sri?.length === 1 && q.sri[0]!.algorithm === "sha256" ? q.sri[0]! : undefined;
  if (only) return storeVerifiedByR2(store, body, { hash: base64ToHex(only.base64), size: length });
  return storeStaged(store, body, length, q);
}

/** The SRI names one sha256: the CAS write under that hash is the check (R2 verifies it). */
async function storeVerifiedByR2(store: BlobStore, body: ReadableStream<Uint8Array>, d: BlobDigest): Promise<OriginResult> {
  try {
    await store.write(d, body);
  } catch (e) {
    if (e instanceof ConnectError && e.code === Code.InvalidArgument) {
      return fail(Code.Aborted, `the content does not match checksum.sri sha256-${hexToBase64(d.hash)} (${e.rawMessage}); nothing was stored`);
    }
    throw e;
  }
  return { ok: true, digest: d, checksums: { sha256: hexToBase64(d.hash) } };
}

/** Hashes the body on its way into a staging object; copies it into the CAS if it verifies. */
async function storeStaged(store: BlobStore, body: ReadableStream<Uint8Array>, length: number, q: AssetQualifiers): Promise<OriginResult> {
  const algorithms = new Set<SriAlgorithm>(["sha256", ...(q.sri ?? []).map((h) => h.algorithm)]);
  const hashers = [...algorithms].map((a) => ({ a, stream: new crypto.DigestStream(SRI_ALGORITHMS[a]) }));
  const writers = hashers.map((h) => h.stream.getWriter());
  const tap = new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, ctl) {
      await Promise.all(writers.map((w) => w.write(chunk)));
      ctl.enqueue(chunk);
    },
    async flush() {
      await Promise.all(writers.map((w) => w.close()));
    },
  });
  const staging = `asset-staging/${store.tenant}/${crypto.randomUUID()}`;
  const sized = new FixedLengthStream(length);
  try {
    const [piped, put] = await Promise.allSettled([body.pipeThrough(tap).pipeTo(sized.writable), store.env.CAS.put(staging, sized.readable)]);
    if (piped.status === "rejected") throw piped.reason;
    if (put.status === "rejected") throw put.reason;
    const checksums: Checksums = {};
    for (const h of hashers) checksums[h.a] = bytesToBase64(await h.stream.digest);
    if (q.sri && !sriSatisfied(q.sri, checksums)) {
      const got = Object.entries(checksums).map(([a, b]) => `${a}-${b}`).join(" ");
      return fail(Code.Aborted, `the content does not match checksum.sri (it hashes to ${got}); nothing was stored`);
    }
    const d: BlobDigest = { hash: base64ToHex(checksums.sha256!), size: length };
    if (!(await store.index.has(d))) {
      const staged = await store.env.CAS.get(staging);
      if (!staged) throw new ConnectError("the staged download vanished before it was stored", Code.Unavailable);
      await store.write(d, staged.body);
    }
    return { ok: true, digest: d, checksums };
  } finally {
    await store.env.CAS.delete(staging);
  }
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
