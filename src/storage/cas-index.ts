// Client side of the CAS index: answers from this isolate's existence cache where it can, groups
// the other digests by shard and asks the shards in parallel.
//
// A tenant's index is CAS_INDEX_SHARDS objects; a digest's shard is its hash's first 32 bits
// scaled to the count, so every count spreads hashes evenly and 16 is the first hex digit (the
// fixed layout this replaced, whose object names 16 keeps). Other counts put the count in the
// names, so two layouts never share an object. The count a tenant's index was built with is
// recorded on first use, and a different one is refused: the new objects would be empty (every
// blob reported missing) while the old ones, unseen, kept evicting. Changing it needs a rehash
// that does not exist yet.
import type { ShardOwner } from "../../durable-objects/cas-eviction.ts";
import type { Env } from "../env.ts";
import { casIndexConfig } from "../config.ts";
import { Code, ConnectError, unavailableFrom } from "../errors.ts";
import { misconfigured, type CasIndexConfig } from "./cas-index-config.ts";
import { blobKey, isEmptyBlob, type BlobDigest } from "./digest.ts";
import { isolateExistenceCache, type ExistenceCache } from "./existence-cache.ts";

/** The shard of a hash among `shards`: its first 32 bits scaled to [0, shards). */
export function shardOf(hash: string, shards: number): number {
  return Math.floor((parseInt(hash.slice(0, 8), 16) * shards) / 2 ** 32);
}

/** The object name of one shard of a tenant's index. */
export function shardName(tenant: string, shard: number, shards: number): string {
  return shards === 16 ? `${tenant}:${shard.toString(16)}` : `${tenant}:${shards}:${shard}`;
}

/** A shard call that failed (the object unreachable, restarted or overloaded): UNAVAILABLE, retry. */
export function shardCall<T>(what: string, call: Promise<T>): Promise<T> {
  return call.catch((e: unknown) => Promise.reject(unavailableFrom(`the CAS index could not ${what}`, e)));
}

/**
 * A small blob as the index answers for a batch read: its stored size, and its bytes when that is
 * the size asked; "r2": recorded, but its bytes are in R2; null: not recorded, so not in the CAS
 * (FindMissing says the same); a ConnectError: its shard could not be asked.
 */
export type SmallLookup = { size: number; data?: Uint8Array } | "r2" | null | ConnectError;

/** Tenants (and counts) whose recorded shard count this isolate has already checked. */
const layoutChecked = new Map<string, Promise<void>>();

export class CasIndex {
  private readonly config: CasIndexConfig;
  private readonly cache: ExistenceCache;

  constructor(
    private readonly env: Env,
    private readonly tenant: string,
    opts: { config?: CasIndexConfig; cache?: ExistenceCache } = {},
  ) {
    this.config = opts.config ?? casIndexConfig();
    this.cache = opts.cache ?? isolateExistenceCache(this.config.existenceTtlMs, this.config.existenceEntries);
  }

  get shards() {
    return this.config.shards;
  }

  shardStub(shard: number) {
    const ns = this.env.CAS_INDEX;
    return ns.get(ns.idFromName(shardName(this.tenant, shard, this.config.shards)));
  }

  /** The stub of the shard that holds `hash`. */
  shard(hash: string) {
    return this.shardStub(shardOf(hash, this.config.shards));
  }

  /** Every shard of this tenant, with what it is told about itself (eviction, reconcile, stats). */
  allShards() {
    return Array.from({ length: this.config.shards }, (_, key) => ({ key, stub: this.shardStub(key), owner: this.owner(key) }));
  }

  /** The shard a hash belongs to (reconcile groups listed objects by it). */
  shardKeyOf = (hash: string) => shardOf(hash, this.config.shards);

  /** What a shard learns about itself: its tenant, its share of the budget, whether it sweeps the action cache. */
  private owner(shard: number): ShardOwner {
    return { tenant: this.tenant, shards: this.config.shards, sweepsActionCache: shard === 0 };
  }

  /** Refuses (UNAVAILABLE) a shard count other than the one this tenant's index was built with. */
  private checkLayout(): Promise<void> {
    const key = `${this.tenant}\n${this.config.shards}`;
    let check = layoutChecked.get(key);
    if (!check) {
      const ns = this.env.CAS_INDEX;
      check = shardCall(`check tenant "${this.tenant}"'s shard count`, ns.get(ns.idFromName(`${this.tenant}:layout`)).layout(this.config.shards))
        .then((recorded) => {
          if (recorded === this.config.shards) return;
          throw misconfigured(
            `CAS_INDEX_SHARDS is ${this.config.shards} but tenant "${this.tenant}"'s CAS index was built with ${recorded} ` +
              `shards; set it back to ${recorded} (changing it needs a rehash, which Kiln does not do yet)`,
          );
        });
      layoutChecked.set(key, check);
      check.catch(() => layoutChecked.delete(key));
    }
    return check;
  }

  /** The positions of `digests` grouped by shard. */
  private byShard(digests: readonly BlobDigest[]) {
    const groups = new Map<number, number[]>();
    for (let i = 0; i < digests.length; i++) {
      const k = shardOf(digests[i]!.hash, this.config.shards);
      let g = groups.get(k);
      if (!g) groups.set(k, (g = []));
      g.push(i);
    }
    return groups;
  }

  /** The digests not in the CAS, each once, in the order asked (see missingAt). */
  async missing(digests: readonly BlobDigest[], touch = true): Promise<BlobDigest[]> {
    return (await this.missingAt(digests, touch)).map((i) => digests[i]!);
  }

  /**
   * The positions in `digests` of those not in the CAS: the first position of each such digest,
   * in order. The empty blob is always present. Present blobs are touched (at most once per
   * touch interval, and not while this isolate's cache answers for them).
   */
  async missingAt(digests: readonly BlobDigest[], touch = true): Promise<number[]> {
    // Each distinct digest once; those this isolate knows to be present are not asked about.
    // Keyed by hash (see existence-cache.ts); the same hash with another size is rare enough
    // for a second, slower set.
    const ask: number[] = [];
    const sizeSeen = new Map<string, number>();
    const otherSizesSeen = new Set<string>();
    const now = this.cache.now();
    for (let i = 0; i < digests.length; i++) {
      const d = digests[i]!;
      // Known present (and so never reported, however often it is asked): nothing to remember.
      if (isEmptyBlob(d) || this.cache.has(this.tenant, d, now)) continue;
      const size = sizeSeen.get(d.hash);
      if (size === d.size) continue;
      if (size === undefined) sizeSeen.set(d.hash, d.size);
      else if (otherSizesSeen.has(blobKey(d))) continue;
      else otherSizesSeen.add(blobKey(d));
      ask.push(i);
    }
    if (ask.length === 0) return [];
    await this.checkLayout();
    const asked = ask.map((i) => digests[i]!);
    const found = new Uint8Array(ask.length);
    await Promise.all(
      [...this.byShard(asked)].map(async ([shard, group]) => {
        const hashes = JSON.stringify(group.map((j) => asked[j]!.hash));
        const sizes = group.map((j) => asked[j]!.size);
        const hits = await shardCall(`look up ${group.length} blob(s) in shard ${shard}`, this.shardStub(shard).present(hashes, sizes, touch, this.config.touchIntervalMs));
        for (const g of hits) {
          const j = group[g]!;
          found[j] = 1;
          // Only an answer that touched the blob may stand in for the index: a touching lookup the
          // cache answers skips the touch, which is safe only because the cached answer made one.
          if (touch) this.cache.add(this.tenant, asked[j]!);
        }
      }),
    );
    return ask.filter((_, j) => !found[j]);
  }

  /**
   * Whether a blob is in the CAS, touching it when it is: every caller answers "present" (or
   * "stored") with it, and a client may then rely on the blob for the minimum lifetime (Bazel's
   * HTTP cache PUTs outputs and then the action's entry, and never asks FindMissing).
   */
  async has(d: BlobDigest): Promise<boolean> {
    return (await this.missing([d], true)).length === 0;
  }

  /**
   * Records blobs that landed. UNAVAILABLE when one was evicted while it was being written (its
   * object went with the eviction): the writer uploads it again.
   */
  async add(digests: readonly BlobDigest[]): Promise<void> {
    if (digests.length === 0) return;
    await this.checkLayout();
    const lost = await Promise.all(
      [...this.byShard(digests)].map(([shard, group]) =>
        shardCall(
          `record ${group.length} blob(s) in shard ${shard}`,
          this.shardStub(shard).add(
            group.map((i): [string, number] => [digests[i]!.hash, digests[i]!.size]),
            this.owner(shard),
          ),
        ),
      ),
    );
    const gone = new Set(lost.flat());
    for (const d of digests) if (!gone.has(d.hash)) this.cache.add(this.tenant, d);
    if (gone.size) {
      throw new ConnectError(`blob(s) ${[...gone].join(", ")} were evicted while being written; upload them again`, Code.Unavailable);
    }
  }

  /**
   * Records small blobs with their bytes (already verified against their digests): one call per
   * shard, each shard's rows and bytes in one transaction.
   */
  async addSmall(blobs: readonly { d: BlobDigest; data: Uint8Array }[]): Promise<void> {
    if (blobs.length === 0) return;
    await this.checkLayout();
    await Promise.all(
      [...this.byShard(blobs.map((b) => b.d))].map(([shard, group]) =>
        shardCall(
          `record ${group.length} small blob(s) in shard ${shard}`,
          this.shardStub(shard).addSmall(
            group.map((i): [string, number, Uint8Array] => [blobs[i]!.d.hash, blobs[i]!.d.size, blobs[i]!.data]),
            this.owner(shard),
          ),
        ),
      ),
    );
    for (const b of blobs) this.cache.add(this.tenant, b.d);
  }

  /** A small blob's size and bytes from its shard; null when the shard does not hold it (it may be in R2). */
  async smallBlob(hash: string): Promise<{ size: number; data: Uint8Array } | null> {
    await this.checkLayout();
    return this.shard(hash).smallBlob(hash);
  }

  /** Small blobs for a batch read (see SmallLookup), one call per shard, by position in `digests` (all small). */
  async smallBlobs(digests: readonly BlobDigest[]): Promise<SmallLookup[]> {
    const out: SmallLookup[] = new Array(digests.length).fill(null);
    if (digests.length === 0) return out;
    try {
      await this.checkLayout();
    } catch (e) {
      return out.fill(unavailableFrom("the CAS index could not be asked", e));
    }
    await Promise.all(
      [...this.byShard(digests)].map(async ([shard, group]) => {
        try {
          const asked = group.map((i): [string, number] => [digests[i]!.hash, digests[i]!.size]);
          const found = await shardCall(`read ${group.length} small blob(s) from shard ${shard}`, this.shardStub(shard).smallBlobs(asked));
          group.forEach((i, k) => (out[i] = found[k] ?? null));
        } catch (e) {
          for (const i of group) out[i] = unavailableFrom(`shard ${shard} of the CAS index could not be asked`, e);
        }
      }),
    );
    return out;
  }

  /**
   * A read found no object for this blob: drop its row (unless written since the read began) and
   * this isolate's cached "present" (other isolates' expire by their TTL).
   */
  async forget(hash: string, readStartedAt: number): Promise<void> {
    this.cache.forget(this.tenant, hash);
    await this.shard(hash).forget([hash], readStartedAt);
  }
}
