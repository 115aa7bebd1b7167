// The bookkeeping half of CAS eviction and repair for one CAS index shard: which rows to evict,
// what this shard is (its tenant, how many shards share the budget), and durable counters for
// /metrics. The CasIndexDO methods that delete objects and talk to R2 use these.
import type { EvictionPolicy } from "../src/storage/eviction-policy.ts";

/** What a shard learns from the worker on every add: the R2 prefix it evicts under and its share. */
export interface ShardOwner {
  tenant: string;
  /** Shards of this tenant's index; each keeps maxBytes / shards. */
  shards: number;
  /** One shard per tenant also ages out the tenant's action-cache entries. */
  sweepsActionCache: boolean;
}

export interface Victim {
  hash: string;
  size: number;
  reason: "idle" | "budget";
}

/** Counters kept per shard, summed across shards by `kiln admin stats` and /metrics. */
export const COUNTERS = ["evicted_idle", "evicted_budget", "evicted_bytes", "healed", "reconcile_added", "reconcile_removed", "ac_expired"] as const;
export type Counter = (typeof COUNTERS)[number];

export function ensureEvictionSchema(sql: SqlStorage): void {
  // Eviction reads blobs oldest first; without this it would scan the shard each step.
  sql.exec(`CREATE INDEX IF NOT EXISTS blobs_by_last_access ON blobs (last_access)`);
  sql.exec(`CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)`);
  sql.exec(`CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)`);
  // Blobs evicted lately: a write whose object landed before the eviction deleted it may record
  // the blob after the eviction finished; such adds look at R2 first (see CasIndexDO.add).
  sql.exec(`CREATE TABLE IF NOT EXISTS recently_evicted (hash TEXT PRIMARY KEY, at INTEGER NOT NULL)`);
  // Evicted blobs (rows gone) whose objects R2 has not yet confirmed deleted: a delete that fails
  // is retried by the alarm, rather than leaving the object in R2 for good.
  sql.exec(`CREATE TABLE IF NOT EXISTS pending_deletes (hash TEXT PRIMARY KEY)`);
}

export function addPendingDeletes(sql: SqlStorage, hashes: string[]): void {
  sql.exec(`INSERT INTO pending_deletes (hash) SELECT value FROM json_each(?) WHERE true ON CONFLICT(hash) DO NOTHING`, JSON.stringify(hashes));
}

export function clearPendingDeletes(sql: SqlStorage, hashes: string[]): void {
  sql.exec(`DELETE FROM pending_deletes WHERE hash IN (SELECT value FROM json_each(?))`, JSON.stringify(hashes));
}

/**
 * Up to `limit` blobs whose objects are still to be deleted. A blob recorded again since (add,
 * addSmall, reconcile: each checks the object first when it was evicted lately) keeps its object,
 * and leaves the list here.
 */
export function pendingDeletes(sql: SqlStorage, limit: number): string[] {
  sql.exec(`DELETE FROM pending_deletes WHERE EXISTS (SELECT 1 FROM blobs WHERE blobs.hash = pending_deletes.hash)`);
  return sql.exec<{ hash: string }>(`SELECT hash FROM pending_deletes LIMIT ?`, limit).toArray().map((r) => r.hash);
}

/** Longer than any write takes between its object landing and its add reaching the shard. */
export const EVICTION_MEMORY_MS = 10 * 60 * 1000;

export function rememberEvicted(sql: SqlStorage, hashes: string[], now: number): void {
  sql.exec(`DELETE FROM recently_evicted WHERE at < ?`, now - EVICTION_MEMORY_MS);
  sql.exec(
    `INSERT INTO recently_evicted (hash, at) SELECT value, ? FROM json_each(?) WHERE true ON CONFLICT(hash) DO UPDATE SET at = excluded.at`,
    now,
    JSON.stringify(hashes),
  );
}

/** Of these hashes, those evicted lately (their objects may be gone whatever a writer says). */
export function recentlyEvicted(sql: SqlStorage, hashes: string[]): Set<string> {
  const rows = sql.exec<{ hash: string }>(`SELECT hash FROM recently_evicted WHERE hash IN (SELECT value FROM json_each(?))`, JSON.stringify(hashes));
  return new Set([...rows].map((r) => r.hash));
}

export function bump(sql: SqlStorage, name: Counter, n: number): void {
  if (n === 0) return;
  sql.exec(`INSERT INTO counters (name, n) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET n = n + excluded.n`, name, n);
}

export function counters(sql: SqlStorage): Record<Counter, number> {
  const out = Object.fromEntries(COUNTERS.map((c) => [c, 0])) as Record<Counter, number>;
  for (const r of sql.exec<{ name: string; n: number }>(`SELECT name, n FROM counters`)) {
    if ((COUNTERS as readonly string[]).includes(r.name)) out[r.name as Counter] = r.n;
  }
  return out;
}

export function getMeta(sql: SqlStorage, k: string): string | undefined {
  return sql.exec<{ v: string }>(`SELECT v FROM meta WHERE k = ?`, k).toArray()[0]?.v;
}

export function setMeta(sql: SqlStorage, k: string, v: string): void {
  sql.exec(`INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`, k, v);
}

export function totals(sql: SqlStorage): { bytes: number; blobs: number } {
  const r = sql.exec<{ bytes: number | null; blobs: number }>(`SELECT SUM(size) AS bytes, COUNT(*) AS blobs FROM blobs`).one();
  return { bytes: r.bytes ?? 0, blobs: r.blobs };
}

/**
 * The least recently used blobs to evict now, oldest first, at most `limit`: those idle past
 * maxIdle, then as many more as bring the shard within its share of the budget. Blobs used within
 * the minimum lifetime are never chosen. `more`: work is left for another step.
 */
export function chooseVictims(sql: SqlStorage, now: number, policy: EvictionPolicy, shards: number, limit: number): { victims: Victim[]; more: boolean } {
  const protectedAfter = now - policy.protectedMs;
  const idleBefore = policy.maxIdleMs === undefined ? -Infinity : now - policy.maxIdleMs;
  let over = policy.maxBytes === undefined ? 0 : totals(sql).bytes - Math.floor(policy.maxBytes / Math.max(1, shards));
  if (over <= 0 && idleBefore === -Infinity) return { victims: [], more: false };
  const victims: Victim[] = [];
  const rows = sql.exec<{ hash: string; size: number; last_access: number }>(
    `SELECT hash, size, last_access FROM blobs WHERE last_access <= ? ORDER BY last_access, hash LIMIT ?`,
    protectedAfter,
    limit + 1,
  );
  for (const r of rows) {
    const reason = r.last_access < idleBefore ? "idle" : over > 0 ? "budget" : undefined;
    if (!reason) break;
    if (victims.length === limit) return { victims, more: true };
    victims.push({ hash: r.hash, size: r.size, reason });
    over -= r.size;
  }
  return { victims, more: false };
}

/**
 * When this shard next has eviction work: the oldest blob's idle deadline, or (over budget with
 * every blob still protected) the moment the oldest leaves its minimum lifetime. null: none.
 */
export function nextEvictionDue(sql: SqlStorage, policy: EvictionPolicy, shards: number): number | null {
  const oldest = sql.exec<{ t: number | null }>(`SELECT MIN(last_access) AS t FROM blobs`).one().t;
  if (oldest === null) return null;
  const due: number[] = [];
  if (policy.maxIdleMs !== undefined) due.push(oldest + Math.max(policy.maxIdleMs, policy.protectedMs));
  if (policy.maxBytes !== undefined && totals(sql).bytes > Math.floor(policy.maxBytes / Math.max(1, shards))) due.push(oldest + policy.protectedMs);
  return due.length ? Math.min(...due) : null;
}
