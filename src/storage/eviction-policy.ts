// What the operator allows the CAS and the action cache to keep (CAS_MAX_BYTES, CAS_MAX_IDLE_DAYS,
// CAS_MIN_LIFETIME_HOURS, AC_MAX_IDLE_DAYS), read from the environment the caller hands in: the
// worker's and the CAS index objects' are the same vars.
import type { Env } from "../env.ts";
import { parseCasIndexConfig } from "./cas-index-config.ts";

const HOUR_MS = 3600 * 1000;
const DAY_MS = 24 * HOUR_MS;

/**
 * Default minimum lifetime. Bazel keeps a blob it was told exists for --experimental_remote_cache_ttl
 * (3 h by default in the Bazel versions that have it) and then asks again; a blob must outlive that.
 */
export const DEFAULT_MIN_LIFETIME_HOURS = 3;

export interface EvictionPolicy {
  /** Bytes this tenant's CAS may hold (all shards together); undefined: no budget. */
  maxBytes?: number;
  /** A blob not used for this long is evicted; undefined: only the budget evicts. */
  maxIdleMs?: number;
  /** No blob is evicted within this long of its last use, whatever the budget. */
  minLifetimeMs: number;
  /**
   * No blob is evicted within this long of its last *recorded* use: the minimum lifetime plus how
   * stale a recorded use may be (last_access is rewritten at most every CAS_TOUCH_INTERVAL_SECONDS,
   * and an isolate answers "present" from memory for CAS_EXISTENCE_CACHE_SECONDS without touching).
   * So a blob reported present, or returned by the action cache, lives the whole minimum lifetime
   * from that answer, as Bazel's --experimental_remote_cache_ttl assumes.
   */
  protectedMs: number;
  /** An action-cache entry not used for this long is deleted; undefined: kept. */
  acMaxIdleMs?: number;
}

/** A positive number, or undefined when unset or unusable (an operator typo keeps data, never loses it). */
function positive(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === "") return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

export function evictionPolicy(env: Env): EvictionPolicy {
  const maxBytes = positive(env.CAS_MAX_BYTES);
  const idleDays = positive(env.CAS_MAX_IDLE_DAYS);
  const acDays = positive(env.AC_MAX_IDLE_DAYS);
  // 0 is allowed here (tests, and operators who accept that builds may lose blobs mid-way).
  const minHours = env.CAS_MIN_LIFETIME_HOURS?.trim() ? Number(env.CAS_MIN_LIFETIME_HOURS) : DEFAULT_MIN_LIFETIME_HOURS;
  const minLifetimeMs = (Number.isFinite(minHours) && minHours >= 0 ? minHours : DEFAULT_MIN_LIFETIME_HOURS) * HOUR_MS;
  return {
    maxBytes: maxBytes === undefined ? undefined : Math.floor(maxBytes),
    maxIdleMs: idleDays === undefined ? undefined : idleDays * DAY_MS,
    minLifetimeMs,
    protectedMs: minLifetimeMs + staleness(env),
    acMaxIdleMs: acDays === undefined ? undefined : acDays * DAY_MS,
  };
}

/** How old a blob's last_access may be when it was in fact just used (see protectedMs). */
function staleness(env: Env): number {
  try {
    const c = parseCasIndexConfig(env);
    return c.touchIntervalMs + c.existenceTtlMs;
  } catch {
    // A malformed setting (refused on every request anyway): assume the defaults, keeping data.
    return parseCasIndexConfig({}).touchIntervalMs + parseCasIndexConfig({}).existenceTtlMs;
  }
}

/** Whether anything is ever evicted from the CAS. */
export const casEvicts = (p: EvictionPolicy) => p.maxBytes !== undefined || p.maxIdleMs !== undefined;
