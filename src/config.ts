// Server configuration read from the Worker's environment, parsed once per isolate.
import { env } from "cloudflare:workers";
import type { Env } from "./env.ts";
import { parseKeyConfig, type KeyConfig } from "./auth.ts";
import { parseCasIndexConfig, type CasIndexConfig } from "./storage/cas-index-config.ts";
import { metered } from "./metrics/metered-env.ts";

/** The bindings, with billed R2 and Durable Object operations counted (metrics/metered-env.ts). */
export const kilnEnv = () => metered(env as unknown as Env);

/** Default: 4 MiB minus room for framing, the gRPC message limit clients assume. */
const DEFAULT_MAX_BATCH = 4 * 1024 * 1024 - 64 * 1024;

export function maxBatchTotalSize(): number {
  const n = Number(kilnEnv().MAX_BATCH_TOTAL_SIZE_BYTES);
  return Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_MAX_BATCH;
}

/**
 * The request-body cap of the edge in front of the Worker (MAX_REQUEST_BODY_BYTES; Cloudflare's is
 * 100 MB on Free and Pro, 200 MB on Business, 500 MB on Enterprise); 0: no cap (local dev).
 */
export function maxRequestBody(): number {
  const n = Number(kilnEnv().MAX_REQUEST_BODY_BYTES ?? 100_000_000);
  return Number.isSafeInteger(n) && n >= 0 ? n : 100_000_000;
}

/** Room left in one request for the framing around a blob's bytes (gRPC-web messages, headers). */
const UPLOAD_FRAMING_ROOM = 1024 * 1024;

/**
 * max_cas_blob_size_bytes: the largest blob one upload request can carry under the body cap, or 0
 * (no limit) without a cap. Larger blobs go up as chunks and SpliceBlob.
 */
export function maxUploadBlobSize(): number {
  const cap = maxRequestBody();
  return cap > 0 ? Math.max(1, cap - UPLOAD_FRAMING_ROOM) : 0;
}

/**
 * FastCDC average chunk size that SplitBlob cuts at and Capabilities advertises
 * (CHUNK_AVG_SIZE_BYTES): a power of two from 1 KiB to 1 MiB, else 512 KiB. The spec allows any
 * size in that range, but clients derive their masks from log2 of it: Bazel ignores an average
 * that is not a power of two and checks chunks against its own 512 KiB's limits, refusing ours.
 */
export function chunkAvgSize(): number {
  const n = Number(kilnEnv().CHUNK_AVG_SIZE_BYTES);
  const powerOfTwo = Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  return powerOfTwo && n >= 1024 && n <= 1024 * 1024 ? n : 512 * 1024;
}

/** Largest blob a client may inline in an ActionResult (stdout, stderr, output files) in total. */
export const MAX_INLINE_BYTES = 1024 * 1024;

let keyCache: { raw: string; config: Promise<KeyConfig> } | undefined;

/** API keys and open-mode settings; a malformed API_KEYS rejects with UNAVAILABLE saying why. */
export function keyConfig(): Promise<KeyConfig> {
  const e = kilnEnv();
  const raw = JSON.stringify([e.API_KEYS, e.ALLOW_OPEN, e.PUBLIC_URL]);
  if (!keyCache || keyCache.raw !== raw) {
    keyCache = { raw, config: parseKeyConfig(e.API_KEYS, { allowOpen: e.ALLOW_OPEN, publicUrl: e.PUBLIC_URL }) };
  }
  return keyCache.config;
}

let casIndexCache: { raw: string; config: CasIndexConfig } | undefined;

/** CAS index shards, touch interval and existence cache; a bad combination throws UNAVAILABLE saying why. */
export function casIndexConfig(): CasIndexConfig {
  const e = kilnEnv();
  const vars = {
    CAS_INDEX_SHARDS: e.CAS_INDEX_SHARDS,
    CAS_TOUCH_INTERVAL_SECONDS: e.CAS_TOUCH_INTERVAL_SECONDS,
    CAS_EXISTENCE_CACHE_SECONDS: e.CAS_EXISTENCE_CACHE_SECONDS,
    CAS_EXISTENCE_CACHE_ENTRIES: e.CAS_EXISTENCE_CACHE_ENTRIES,
    CAS_MIN_LIFETIME_HOURS: e.CAS_MIN_LIFETIME_HOURS,
  };
  const raw = JSON.stringify(vars);
  if (!casIndexCache || casIndexCache.raw !== raw) casIndexCache = { raw, config: parseCasIndexConfig(vars) };
  return casIndexCache.config;
}

const seconds = (v: string | undefined, fallback: number) => {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n * 1000 : fallback * 1000;
};

/** How long a completed operation stays readable (WaitExecution, GetOperation). Default 24 h. */
export const retentionMs = () => seconds(kilnEnv().OPERATION_RETENTION_SECONDS, 24 * 3600);
/** Action.timeout when the action sets none. Default 10 min. */
export const defaultActionTimeoutMs = () => seconds(kilnEnv().DEFAULT_ACTION_TIMEOUT_SECONDS, 600);
/**
 * Longer Action.timeout values are refused with INVALID_ARGUMENT. Default 6 h. No request or alarm
 * is held while an action runs (the runner holds a lease renewed by heartbeats), so there is no
 * platform ceiling: the value is the operator's choice.
 */
export const maxActionTimeoutMs = () => seconds(kilnEnv().MAX_ACTION_TIMEOUT_SECONDS, 6 * 3600);
/** How often a runner renews the lease of each action it runs. Default 10 s. */
export const heartbeatIntervalMs = () => seconds(kilnEnv().RUNNER_HEARTBEAT_SECONDS, 10);
/** A lease not renewed for this long is lost and its action queued again. Default 3 heartbeats. */
export const leaseDurationMs = () => seconds(kilnEnv().RUNNER_LEASE_SECONDS, 3 * heartbeatIntervalMs() / 1000);
/** How many RunnerPoolDO shards queue work and hold runner connections. Default 1. */
export function poolShardCount(): number {
  const n = Number(kilnEnv().RUNNER_POOL_SHARDS);
  return Number.isSafeInteger(n) && n >= 1 && n <= 1024 ? n : 1;
}
/** An unfinished operation asks its pool shard about itself this often (the watchdog's other half). */
export const reconcileIntervalMs = () => seconds(kilnEnv().OPERATION_RECONCILE_SECONDS, 60);
/** Queued operations complete UNAVAILABLE once no runner has answered for this long. Default 60 s. */
export const noRunnerTimeoutMs = () => seconds(kilnEnv().NO_RUNNER_TIMEOUT_SECONDS, 60);

/**
 * This worker's URL as runner containers reach it: PUBLIC_URL, else the origin Execute calls
 * arrived at. That origin is the request's own URL, which the platform routed to this worker,
 * never a URL a caller wrote into a request body.
 */
export function publicUrl(env: Env, requestOrigin?: string): string | undefined {
  return (env.PUBLIC_URL?.trim() || requestOrigin)?.replace(/\/$/, "");
}

/** Remote execution is configured when runners can authenticate, or containers can be started. */
export const executionConfigured = (env: Env) =>
  Boolean(env.RUNNER_KEYS?.trim()) || (Boolean(env.RUNNER) && Number(env.RUNNER_CONTAINERS ?? "0") > 0);

/** ASSET_FETCH_ALLOW: the hosts (or host:port) Remote Asset FetchBlob may download from. Unset: none. */
export const assetFetchAllow = (): Set<string> =>
  new Set(
    (kilnEnv().ASSET_FETCH_ALLOW ?? "")
      .split(/[\s,]+/)
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );

/**
 * R2's largest single upload: 5 GiB less 5 MiB. A download of declared length goes into R2 in one
 * put, and so does the copy of a staged one under its SHA-256, so no download can be kept above it.
 */
export const R2_MAX_PUT_BYTES = 5 * 1024 ** 3 - 5 * 1024 ** 2;

/**
 * ASSET_FETCH_MAX_BYTES: the most bytes FetchBlob downloads from an origin. Unset, and at most,
 * R2_MAX_PUT_BYTES: a larger download would fail in R2 after all of it had been fetched. At that
 * size the 10-minute fetch timeout already asks about 9 MB/s of the origin.
 */
export function assetFetchMaxBytes(): number {
  const n = Number(kilnEnv().ASSET_FETCH_MAX_BYTES);
  return Number.isSafeInteger(n) && n > 0 ? Math.min(n, R2_MAX_PUT_BYTES) : R2_MAX_PUT_BYTES;
}
