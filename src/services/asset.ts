// Remote Asset API (build.bazel.remote.asset.v1): Fetch and Push, per tenant and instance name.
// An asset maps (URI, key qualifiers) to a blob or a directory in the CAS (storage/asset-store.ts).
// Fetch answers from what was pushed or fetched before, if it is unexpired, no older than
// oldest_content_accepted, satisfies checksum.sri and is still whole in the CAS (its blobs are
// touched, as the spec asks servers to extend their lifetimes); otherwise FetchBlob downloads an
// http(s) URI from an allowed host (asset-origin.ts). Reading needs the read permission; anything
// that writes (Push, or a download into the CAS) needs write.
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampFromMs, timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  Fetch,
  FetchBlobResponseSchema,
  FetchDirectoryResponseSchema,
  Push,
  PushBlobResponseSchema,
  PushDirectoryResponseSchema,
  type FetchBlobRequest,
  type FetchDirectoryRequest,
  type PushBlobRequest,
  type PushDirectoryRequest,
  type Qualifier,
} from "../gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { DigestFunction_Value, type Digest } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { authorize } from "../auth.ts";
import { assetFetchAllow, assetFetchMaxBytes } from "../config.ts";
import type { Env } from "../env.ts";
import { invalidArgument, missingBlobs, unavailableFrom } from "../errors.ts";
import { callOrigin } from "../execution/request-metadata.ts";
import { assetKey, dropAsset, getAsset, putAsset, type AssetKind, type AssetRecord } from "../storage/asset-store.ts";
import { checkDigestFunction, missingSubject, parseDigest, toProtoDigest, type BlobDigest } from "../storage/digest.ts";
import { casEvicts, evictionPolicy } from "../storage/eviction-policy.ts";
import { directoryBlobs } from "./action-cache.ts";
import { headersFor } from "./asset-headers.ts";
import { fetchFromOrigin, isFetchableUri } from "./asset-origin.ts";
import { base64ToHex, checksumsOf, hexToBase64, parseQualifiers, sriQualifier, sriSatisfied, type AssetQualifiers, type Checksums } from "./asset-qualifiers.ts";
import { scopeFor, type Scope } from "./scope.ts";

const MAX_URIS = 100;
const MAX_URI_CHARS = 8192;
/** Origin downloads without a `timeout` stop after this; longer timeouts are clamped to it. */
const DEFAULT_FETCH_TIMEOUT_MS = 10 * 60 * 1000;

function parseUris(uris: readonly string[]): string[] {
  if (uris.length === 0) throw invalidArgument("at least one URI is required", "uris");
  if (uris.length > MAX_URIS) throw invalidArgument(`${uris.length} URIs; at most ${MAX_URIS}`, "uris");
  return uris.map((u, i) => {
    if (u.length > MAX_URI_CHARS) throw invalidArgument(`uris[${i}] is over ${MAX_URI_CHARS} characters`, `uris[${i}]`);
    if (!URL.canParse(u)) throw invalidArgument(`uris[${i}] "${u.slice(0, 200)}" is not an absolute URI`, `uris[${i}]`);
    return u;
  });
}

function parseTimeout(t: Duration | undefined): number {
  if (!t) return DEFAULT_FETCH_TIMEOUT_MS;
  const ms = durationMs(t);
  if (ms <= 0) throw invalidArgument("timeout must be positive", "timeout");
  return Math.min(ms, DEFAULT_FETCH_TIMEOUT_MS);
}

const msOf = (t: Timestamp | undefined, field: string): number | undefined => {
  if (!t) return undefined;
  const ms = timestampMs(t);
  if (!Number.isFinite(ms)) throw invalidArgument(`${field} is not a valid time`, field);
  return ms;
};

interface FetchArgs {
  s: Scope;
  kind: AssetKind;
  uris: string[];
  q: AssetQualifiers;
  oldestMs: number;
}

/** The blobs an asset needs whole in the CAS: its digest (a directory: its whole tree) and references. */
async function assetBlobs(s: Scope, kind: AssetKind, digest: BlobDigest, blobs: BlobDigest[], directories: BlobDigest[]): Promise<BlobDigest[]> {
  const trees = kind === "directory" ? [digest, ...directories] : directories;
  return [...(kind === "blob" ? [digest] : []), ...blobs, ...(await directoryBlobs(s, trees))];
}

/** A stored asset that may answer this Fetch, or null. */
async function usableAsset({ s, kind, q, oldestMs }: FetchArgs, uri: string): Promise<AssetRecord | null> {
  const key = await assetKey(s.principal.tenant, s.instanceName, kind, uri, q.key);
  const rec = await getAsset(s.env.CAS, key);
  if (!rec) return null;
  if (rec.expireAtMs !== undefined && rec.expireAtMs <= Date.now()) {
    await dropAsset(s.env.CAS, key, rec.etag);
    return null;
  }
  if (rec.storedAtMs < oldestMs) return null;
  if (q.sri && !sriSatisfied(q.sri, rec.checksums)) return null;
  // A directory that is only partly present (or not a valid tree) is a miss too; present blobs
  // are touched. Storage failing on the way is not a miss: the call is UNAVAILABLE, to retry.
  const needed = await assetBlobs(s, kind, rec.digest, rec.referencedBlobs, rec.referencedDirectories).catch((e: unknown) => {
    if (e instanceof ConnectError && e.code === Code.Unavailable) throw e;
    return null;
  });
  if (!needed || (await s.store.index.missing(needed, true)).length > 0) return null;
  return rec;
}

interface Answer {
  status: { code: number; message?: string };
  /** The failure would repeat on a retry (see OriginResult). */
  final?: boolean;
  uri: string;
  qualifiers?: { name: string; value: string }[];
  expiresAt?: Timestamp;
  digest?: { hash: string; sizeBytes: bigint };
  digestFunction?: DigestFunction_Value;
}

/**
 * A Fetch answer from a stored asset (status OK: google.rpc.Code 0), its blobs touched no earlier
 * than `touchedMs`.
 */
const answer = (env: Env, uri: string, rec: AssetRecord, touchedMs: number): Answer => {
  const expiresAtMs = availableThrough(env, rec.expireAtMs, touchedMs);
  return {
    status: { code: 0 },
    uri,
    qualifiers: [...rec.qualifiers, ...sriQualifier(rec.checksums)],
    expiresAt: expiresAtMs === undefined ? undefined : timestampFromMs(expiresAtMs),
    digest: toProtoDigest(rec.digest),
    digestFunction: DigestFunction_Value.SHA256,
  };
};

/**
 * expires_at, "a minimum timestamp the content is expected to be available through": Push's
 * expire_at, but no later than CAS eviction is sure to spare the blobs. Eviction takes no blob
 * within protectedMs of its last recorded use (eviction-policy.ts), and a recorded use may lag the
 * touch that made it by the index's staleness, which protectedMs adds to the minimum lifetime:
 * from the touch itself, the blobs are safe for the minimum lifetime. A CAS that never evicts
 * leaves expire_at alone (unset: no time is promised).
 */
function availableThrough(env: Env, expireAtMs: number | undefined, touchedMs: number): number | undefined {
  const policy = evictionPolicy(env);
  const spared = casEvicts(policy) ? touchedMs + policy.minLifetimeMs : undefined;
  if (spared === undefined) return expireAtMs;
  return expireAtMs === undefined ? spared : Math.min(expireAtMs, spared);
}

async function parseFetch(ctx: HandlerContext, req: FetchBlobRequest | FetchDirectoryRequest, kind: AssetKind): Promise<FetchArgs> {
  const s = await scopeFor(ctx, req.instanceName, "read");
  checkDigestFunction(req.digestFunction);
  const uris = parseUris(req.uris);
  const q = parseQualifiers(req.qualifiers, uris.length);
  return { s, kind, uris, q, oldestMs: msOf(req.oldestContentAccepted, "oldest_content_accepted") ?? -Infinity };
}

async function fetchBlob(ctx: HandlerContext, req: FetchBlobRequest) {
  const args = await parseFetch(ctx, req, "blob");
  const timeoutMs = parseTimeout(req.timeout);
  const { s, uris, q } = args;
  for (const uri of uris) {
    const lookedMs = Date.now();
    const rec = await usableAsset(args, uri);
    if (rec) return respondBlob(ctx, answer(s.env, uri, rec, lookedMs));
  }
  const fetchable = uris.filter(isFetchableUri);
  if (fetchable.length === 0 || q.pushOnly.length > 0) {
    const why = q.pushOnly.length > 0 ? `qualifier(s) ${q.pushOnly.join(", ")} match only pushed assets` : "no URI is an http(s) URL Kiln could fetch";
    return respondBlob(ctx, { status: { code: Code.NotFound, message: `no usable asset is stored for these URIs and qualifiers, and ${why}` }, uri: uris[0]! });
  }
  const lookedMs = Date.now();
  const known = await presentBySha256(args);
  if (known) return respondBlob(ctx, answer(s.env, fetchable[0]!, newRecord(known, q, { sha256: hexToBase64(known.hash) }, lookedMs), lookedMs));
  // Downloading writes to the CAS: the caller needs write access, whatever the origin.
  authorize(s.principal, s.instanceName, "write");
  const allow = assetFetchAllow();
  const maxBytes = assetFetchMaxBytes();
  const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(timeoutMs)]);
  // The fetch ends at `timeout` or at the call's own deadline, whichever is sooner: Bazel leaves
  // `timeout` unset and bounds the call with --remote_timeout (60 s) instead. The shares below are
  // of that, less a moment to store and answer before the deadline.
  const rpcLeftMs = ctx.timeoutMs();
  const deadlineMs = Date.now() + (rpcLeftMs === undefined ? timeoutMs : Math.min(timeoutMs, Math.max(0, rpcLeftMs - ANSWER_MARGIN_MS)));
  let last: { uri: string; code: Code; message: string; final?: boolean } = { uri: fetchable[0]!, code: Code.NotFound, message: "" };
  let left = fetchable.length;
  for (const [i, uri] of uris.entries()) {
    if (!isFetchableUri(uri)) continue;
    const startedMs = Date.now();
    // `timeout` is for the whole fetch, and one mirror that never answers must not use it all:
    // each URI gets an equal share of what is left to answer in (the last one all of it). Once
    // it answers, its body may take the rest of the timeout: a mirror that is sending is alive,
    // and cutting a large download at a share would waste it where it would have finished.
    const answerWithinMs = Math.floor(Math.max(0, deadlineMs - startedMs) / left--);
    const got = await fetchFromOrigin(s.store, uri, q, { allow, signal, headers: headersFor(q.headers, uri, i), answerWithinMs, maxBytes });
    if (!got.ok) {
      last = { uri, code: got.code, message: got.message, final: got.final };
      continue;
    }
    const rec = newRecord(got.digest, q, got.checksums, startedMs);
    await putAsset(s.env.CAS, await assetKey(s.principal.tenant, s.instanceName, "blob", uri, q.key), rec);
    return respondBlob(ctx, answer(s.env, uri, rec, startedMs));
  }
  return respondBlob(ctx, { status: { code: last.code, message: last.message }, uri: last.uri, final: last.final });
}

/** Of a call's deadline, what the per-URI shares leave for storing and answering. */
const ANSWER_MARGIN_MS = 1000;

/**
 * The blob a sha256 in checksum.sri names, when this tenant's CAS already holds it: it is the
 * content the URL must have, so no download is needed (Bazel's repository cache looks files up
 * by checksum the same way). Not when resource_type asks for something only the origin's answer
 * can show; nor with oldest_content_accepted, the spec's way to ask for a new download; nor with
 * bazel.canonical_id, which means "not from a cache unless it was added with this canonical id"
 * (Bazel's repository cache keeps the id beside each file for this): a blob in the CAS carries
 * no id, while an asset stored with the id is keyed by it and still answers (usableAsset).
 */
async function presentBySha256({ s, q, oldestMs }: FetchArgs): Promise<BlobDigest | null> {
  if (q.resourceType !== undefined || q.canonicalId !== undefined || oldestMs !== -Infinity) return null;
  for (const h of q.sri ?? []) {
    if (h.algorithm !== "sha256") continue;
    const hash = base64ToHex(h.base64);
    const size = await s.store.sizeOf(hash);
    if (size !== null && (await s.store.index.missing([{ hash, size }], true)).length === 0) return { hash, size };
  }
  return null;
}

/**
 * Bazel's downloader (4.2.3 at least) ignores the response's status and reads blob_digest, empty
 * on failure: it would write an empty file where the fetch failed. Bazel gets failures as RPC
 * errors, with the same code and message; every other client gets the status the spec asks for.
 */
function raiseForBazel(ctx: HandlerContext, r: Answer): void {
  if (r.status.code === 0 || callOrigin(ctx.requestHeader).toolName !== "bazel") return;
  // Bazel's retrier retries ABORTED and RESOURCE_EXHAUSTED (up to 5 more times, each a whole
  // download). A failed check of the content (checksum, resource_type) or a body over Kiln's limit
  // fails again the same way: raised as FAILED_PRECONDITION, which it does not retry, with the
  // same message. An origin's 429 stays RESOURCE_EXHAUSTED: waiting may help there.
  const code = r.status.code === Code.Aborted || r.final ? Code.FailedPrecondition : (r.status.code as Code);
  throw new ConnectError(r.status.message ?? "", code);
}

function respondBlob(ctx: HandlerContext, r: Answer) {
  raiseForBazel(ctx, r);
  const { digest, final: _final, ...rest } = r;
  return create(FetchBlobResponseSchema, { ...rest, blobDigest: digest });
}

async function fetchDirectory(ctx: HandlerContext, req: FetchDirectoryRequest) {
  const args = await parseFetch(ctx, req, "directory");
  parseTimeout(req.timeout);
  for (const uri of args.uris) {
    const lookedMs = Date.now();
    const rec = await usableAsset(args, uri);
    if (rec) {
      const { digest, ...rest } = answer(args.s.env, uri, rec, lookedMs);
      return create(FetchDirectoryResponseSchema, { ...rest, rootDirectoryDigest: digest });
    }
  }
  const missed: Answer = {
    status: { code: Code.NotFound, message: "no usable directory is stored for these URIs and qualifiers; Kiln serves only pushed directories" },
    uri: args.uris[0]!,
  };
  raiseForBazel(ctx, missed);
  return create(FetchDirectoryResponseSchema, missed);
}

const newRecord = (digest: BlobDigest, q: AssetQualifiers, checksums: Checksums, storedAtMs: number, extra: Partial<AssetRecord> = {}): AssetRecord => ({
  digest,
  qualifiers: q.key.map((k: Qualifier) => ({ name: k.name, value: k.value })),
  checksums,
  storedAtMs,
  referencedBlobs: [],
  referencedDirectories: [],
  ...extra,
});

interface PushArgs {
  instanceName: string;
  uris: string[];
  qualifiers: Qualifier[];
  expireAt?: Timestamp;
  referencesBlobs: Digest[];
  referencesDirectories: Digest[];
  digestFunction: DigestFunction_Value;
}

async function push(ctx: HandlerContext, req: PushArgs, kind: AssetKind, digestField: string, digest: Digest | undefined): Promise<void> {
  const s = await scopeFor(ctx, req.instanceName, "write");
  checkDigestFunction(req.digestFunction);
  const uris = parseUris(req.uris);
  const q = parseQualifiers(req.qualifiers, uris.length);
  const d = parseDigest(digest, digestField);
  const blobs = req.referencesBlobs.map((r, i) => parseDigest(r, `references_blobs[${i}]`));
  const directories = req.referencesDirectories.map((r, i) => parseDigest(r, `references_directories[${i}]`));
  // The spec lets a server trust pushed qualifiers, but checksum.sri is what a Fetch with that SRI
  // is answered by: a claim left unchecked would let any writer bind a URL to other bytes for
  // every client that pins the URL's checksum. A directory is a tree, not bytes: there is nothing
  // for an SRI (of the archive it came from, say) to be checked against, so it is refused rather
  // than ignored, which would leave the pusher believing it was recorded.
  if (kind === "directory" && q.sri) {
    throw invalidArgument("checksum.sri is a checksum of bytes; a pushed directory is a tree Kiln cannot check it against", "qualifiers.name");
  }
  // Touched: the association should keep its blobs alive, as a Fetch hit does.
  const missing = await s.store.index.missing(await assetBlobs(s, kind, d, blobs, directories), true);
  if (missing.length > 0) {
    throw missingBlobs(`the asset references ${missing.length} blob(s) not in the CAS; upload them first`, missing.map(missingSubject));
  }
  const checksums = kind === "blob" ? await pushedChecksums(s, d, q.sri, digestField) : {};
  const rec = newRecord(d, q, checksums, Date.now(), {
    expireAtMs: msOf(req.expireAt, "expire_at"),
    referencedBlobs: blobs,
    referencedDirectories: directories,
  });
  for (const uri of uris) await putAsset(s.env.CAS, await assetKey(s.principal.tenant, s.instanceName, kind, uri, q.key), rec);
}

/**
 * What a pushed blob hashes to: its sha256 (its digest) and every other algorithm checksum.sri
 * names, computed from its bytes in the CAS. INVALID_ARGUMENT unless one of the SRI's hashes is
 * among them (SRI's rule, as a download is checked); only computed hashes are recorded.
 */
async function pushedChecksums(s: Scope, d: BlobDigest, sri: AssetQualifiers["sri"], field: string): Promise<Checksums> {
  const known: Checksums = { sha256: hexToBase64(d.hash) };
  if (!sri) return known;
  const others = [...new Set(sri.map((h) => h.algorithm))].filter((a) => a !== "sha256");
  if (others.length > 0) {
    const { body } = await s.store.read(d);
    Object.assign(
      known,
      await checksumsOf(body, others).catch((e: unknown) => {
        throw unavailableFrom(`${field} ${d.hash}/${d.size} could not be read from the CAS to check checksum.sri`, e);
      }),
    );
  }
  if (!sriSatisfied(sri, known)) {
    throw invalidArgument(`checksum.sri names no hash ${field} ${d.hash}/${d.size} has; nothing was recorded`, "qualifiers.value");
  }
  return known;
}

export const fetchService: ServiceImpl<typeof Fetch> = {
  fetchBlob: (req, ctx) => fetchBlob(ctx, req),
  fetchDirectory: (req, ctx) => fetchDirectory(ctx, req),
};

export const pushService: ServiceImpl<typeof Push> = {
  pushBlob: async (req: PushBlobRequest, ctx) => {
    await push(ctx, req, "blob", "blob_digest", req.blobDigest);
    return create(PushBlobResponseSchema);
  },
  pushDirectory: async (req: PushDirectoryRequest, ctx) => {
    await push(ctx, req, "directory", "root_directory_digest", req.rootDirectoryDigest);
    return create(PushDirectoryResponseSchema);
  },
};
