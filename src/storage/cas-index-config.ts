// The CAS index's deployment settings, checked together because they bound each other. Eviction
// adds the existence cache's TTL and the touch interval (how stale last_access may be) to the
// minimum lifetime (eviction-policy.ts protectedMs); keeping their sum below the minimum lifetime
// keeps last_access a fair measure of use, and idle blobs from lingering past twice their lifetime.
import { Code, ConnectError } from "../errors.ts";

export interface CasIndexConfig {
  /** Index objects per tenant; a digest's object is its hash's first 32 bits scaled to this. */
  shards: number;
  /** A blob's last_access is rewritten only when older than this (0: on every touch). */
  touchIntervalMs: number;
  /** How long an in-isolate "present" answer is reused without asking the index (0: never). */
  existenceTtlMs: number;
  /** Entries the in-isolate existence cache holds before dropping the least recently used. */
  existenceEntries: number;
  /** Eviction never removes a blob accessed more recently than this (the eviction lane's setting). */
  minLifetimeMs: number;
}

export interface CasIndexVars {
  CAS_INDEX_SHARDS?: string;
  CAS_TOUCH_INTERVAL_SECONDS?: string;
  CAS_EXISTENCE_CACHE_SECONDS?: string;
  CAS_EXISTENCE_CACHE_ENTRIES?: string;
  /** The eviction lane's setting, in hours (default 3). */
  CAS_MIN_LIFETIME_HOURS?: string;
}

export const DEFAULT_SHARDS = 16;
/** Beyond this a FindMissing of 200 digests already reaches ~200 objects; more only costs. */
export const MAX_SHARDS = 65_536;

export const misconfigured = (message: string) => new ConnectError(`server misconfigured: ${message}`, Code.Unavailable);

function number(vars: CasIndexVars, name: keyof CasIndexVars, fallback: number, integer: boolean): number {
  const raw = vars[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (integer && !Number.isSafeInteger(n))) {
    throw misconfigured(`${name} is "${raw}"; it must be a ${integer ? "whole " : ""}number of 0 or more`);
  }
  return n;
}

/** Throws UNAVAILABLE naming the setting when a value is malformed or the bounds do not hold. */
export function parseCasIndexConfig(vars: CasIndexVars): CasIndexConfig {
  const shards = number(vars, "CAS_INDEX_SHARDS", DEFAULT_SHARDS, true);
  if (shards < 1 || shards > MAX_SHARDS) throw misconfigured(`CAS_INDEX_SHARDS is ${shards}; it must be from 1 to ${MAX_SHARDS}`);
  const c: CasIndexConfig = {
    shards,
    touchIntervalMs: number(vars, "CAS_TOUCH_INTERVAL_SECONDS", 3600, false) * 1000,
    existenceTtlMs: number(vars, "CAS_EXISTENCE_CACHE_SECONDS", 300, false) * 1000,
    existenceEntries: number(vars, "CAS_EXISTENCE_CACHE_ENTRIES", 50_000, true),
    minLifetimeMs: number(vars, "CAS_MIN_LIFETIME_HOURS", 3, false) * 3600_000,
  };
  // All three 0 is allowed: nothing cached, every touch written, eviction at will (tests).
  const stale = c.existenceTtlMs + c.touchIntervalMs;
  if (stale > 0 && stale >= c.minLifetimeMs) {
    throw misconfigured(
      `CAS_EXISTENCE_CACHE_SECONDS (${c.existenceTtlMs / 1000}) + CAS_TOUCH_INTERVAL_SECONDS (${c.touchIntervalMs / 1000}) ` +
        `must be below CAS_MIN_LIFETIME_HOURS (${c.minLifetimeMs / 3600_000} h = ${c.minLifetimeMs / 1000} s): eviction protects a blob for their sum after ` +
        `its recorded last use, and last_access must stay a fair measure of use`,
    );
  }
  return c;
}
