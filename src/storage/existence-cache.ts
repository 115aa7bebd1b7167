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

export class ExistenceCache {
  /** Key -> expiry (ms); a Map iterates in insertion order, so its first key is the least recent. */
  private readonly expiry = new Map<string, number>();

  constructor(
    readonly ttlMs: number,
    readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size() {
    return this.expiry.size;
  }

  has(key: string): boolean {
    const until = this.expiry.get(key);
    if (until === undefined) return false;
    this.expiry.delete(key);
    if (until <= this.now()) return false;
    this.expiry.set(key, until); // most recently used now; the expiry stays that of the answer
    return true;
  }

  /** Remembers that the index said `key` is present, now. */
  add(key: string): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    this.expiry.delete(key);
    this.expiry.set(key, this.now() + this.ttlMs);
    while (this.expiry.size > this.maxEntries) this.expiry.delete(this.expiry.keys().next().value!);
  }

  forget(key: string): void {
    this.expiry.delete(key);
  }
}

let shared: ExistenceCache | undefined;

/** This isolate's cache, recreated (empty) when its settings change. */
export function isolateExistenceCache(ttlMs: number, maxEntries: number): ExistenceCache {
  if (!shared || shared.ttlMs !== ttlMs || shared.maxEntries !== maxEntries) shared = new ExistenceCache(ttlMs, maxEntries);
  return shared;
}
