// Server configuration read from the Worker's environment, parsed once per isolate.
import { env } from "cloudflare:workers";
import type { Env } from "./env.ts";
import { parseKeyConfig, type KeyConfig } from "./auth.ts";
import { metered } from "./metrics/metered-env.ts";

/** The bindings, with billed R2 and Durable Object operations counted (metrics/metered-env.ts). */
export const kilnEnv = () => metered(env as unknown as Env);

/** Default: 4 MiB minus room for framing, the gRPC message limit clients assume. */
const DEFAULT_MAX_BATCH = 4 * 1024 * 1024 - 64 * 1024;

export function maxBatchTotalSize(): number {
  const n = Number(kilnEnv().MAX_BATCH_TOTAL_SIZE_BYTES);
  return Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_MAX_BATCH;
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

export function publicUrl(env: Env): string {
  return (env.PUBLIC_URL ?? "http://127.0.0.1:8787").replace(/\/$/, "");
}

/** Remote execution is configured when runners can authenticate, or containers can be started. */
export const executionConfigured = (env: Env) =>
  Boolean(env.RUNNER_KEYS?.trim()) || (Boolean(env.RUNNER) && Number(env.RUNNER_CONTAINERS ?? "0") > 0);
