// Positive answers of the CAS index, remembered in this isolate for a short TTL so that a warm
// FindMissing of blobs asked about a moment ago does not reach the index objects again
// (bb-storage's existence-caching decorator, in memory). Only "present" is ever cached: a blob
// reported missing may be uploaded the next instant. Safe because eviction never removes a blob
// accessed within the minimum lifetime, and TTL + touch interval < minimum lifetime is enforced
// by the config (cas-index-config.ts); a row removed for another reason (an R2 object found gone)
// may still be reported present by other isolates for up to the TTL.
//
// Why not the Cache API: it is keyed by request, so a 200-digest FindMissing would be 200 cache
// lookups, each costing about what the one index call per shard it would save costs.
import type { BlobDigest } from "./digest.ts";

interface Answer {
  size: number;
  /** When the answer stops counting (ms). */
  until: number;
}

export class ExistenceCache {
  /**
   * Tenant -> hash -> the index's answer, each map in the order the answers came: the first key is
   * the oldest answer, the first to go when the cache is full (from the tenant first seen, when
   * there are several). A hit does not move its key (no LRU): the answer's age is what bounds it.
   * Keyed by the bare hash, which the runtime has already hashed for its own map lookups: a
   * FindMissing of 10,000 digests asks 10,000 times, and building "tenant/hash/size" keys for
   * them cost more than the lookups.
   */
  private readonly tenants = new Map<string, Map<string, Answer>>();
  private entries = 0;

  constructor(
    readonly ttlMs: number,
    readonly maxEntries: number,
    readonly now: () => number = Date.now,
  ) {}

  get size() {
    return this.entries;
  }

  /** `now`: the clock read once by a caller asking about many digests. */
  has(tenant: string, d: BlobDigest, now = this.now()): boolean {
    const answers = this.tenants.get(tenant);
    const a = answers?.get(d.hash);
    if (a === undefined || a.size !== d.size) return false;
    if (a.until > now) return true;
    this.drop(tenant, answers!, d.hash);
    return false;
  }

  /** Remembers that the index said `d` is present, now. */
  add(tenant: string, d: BlobDigest): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    let answers = this.tenants.get(tenant);
    if (!answers) this.tenants.set(tenant, (answers = new Map()));
    if (answers.delete(d.hash)) this.entries--;
    answers.set(d.hash, { size: d.size, until: this.now() + this.ttlMs });
    this.entries++;
    while (this.entries > this.maxEntries) {
      const [oldestTenant, oldest] = this.tenants.entries().next().value!;
      this.drop(oldestTenant, oldest, oldest.keys().next().value!);
    }
  }

  /** Forgets what was said about `hash` (whatever the size). */
  forget(tenant: string, hash: string): void {
    const answers = this.tenants.get(tenant);
    if (answers?.has(hash)) this.drop(tenant, answers, hash);
  }

  private drop(tenant: string, answers: Map<string, Answer>, hash: string): void {
    if (!answers.delete(hash)) return;
    this.entries--;
    if (answers.size === 0) this.tenants.delete(tenant);
  }
}

let shared: ExistenceCache | undefined;

/** This isolate's cache, recreated (empty) when its settings change. */
export function isolateExistenceCache(ttlMs: number, maxEntries: number): ExistenceCache {
  if (!shared || shared.ttlMs !== ttlMs || shared.maxEntries !== maxEntries) shared = new ExistenceCache(ttlMs, maxEntries);
  return shared;
}
