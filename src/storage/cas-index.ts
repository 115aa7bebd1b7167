// Client side of the CAS index: groups digests by shard and asks the shards in parallel.
import type { ShardOwner } from "../../durable-objects/cas-eviction.ts";
import type { Env } from "../env.ts";
import { Code, ConnectError } from "../errors.ts";
import { blobKey, isEmptyBlob, type BlobDigest } from "./digest.ts";

const SHARD_HEX_DIGITS = 1; // 16 shards per tenant

export class CasIndex {
  constructor(
    private readonly env: Env,
    private readonly tenant: string,
  ) {}

  shard(hash: string) {
    return this.shardByKey(hash.slice(0, SHARD_HEX_DIGITS));
  }

  private shardByKey(key: string) {
    const ns = this.env.CAS_INDEX;
    return ns.get(ns.idFromName(`${this.tenant}:${key}`));
  }

  /** Every shard of this tenant, with what it is told about itself (eviction, reconcile, stats). */
  allShards() {
    const n = 16 ** SHARD_HEX_DIGITS;
    return Array.from({ length: n }, (_, i) => {
      const key = i.toString(16).padStart(SHARD_HEX_DIGITS, "0");
      return { key, stub: this.shardByKey(key), owner: this.owner(key) };
    });
  }

  /** The shard key a hash belongs to (reconcile groups listed objects by it). */
  shardKeyOf = (hash: string) => hash.slice(0, SHARD_HEX_DIGITS);

  private owner(key: string): ShardOwner {
    return { tenant: this.tenant, shards: 16 ** SHARD_HEX_DIGITS, sweepsActionCache: /^0+$/.test(key) };
  }

  private byShard(digests: readonly BlobDigest[]) {
    const groups = new Map<string, [string, number][]>();
    for (const d of digests) {
      const k = d.hash.slice(0, SHARD_HEX_DIGITS);
      let g = groups.get(k);
      if (!g) groups.set(k, (g = []));
      g.push([d.hash, d.size]);
    }
    return groups;
  }

  /** The digests not in the CAS. The empty blob is always present. Present blobs are touched. */
  async missing(digests: readonly BlobDigest[], touch = true): Promise<BlobDigest[]> {
    const wanted = digests.filter((d) => !isEmptyBlob(d));
    const present = new Set<string>();
    await Promise.all(
      [...this.byShard(wanted)].map(async ([, group]) => {
        for (const k of await this.shard(group[0]![0]).present(group, touch)) present.add(k);
      }),
    );
    const seen = new Set<string>();
    return wanted.filter((d) => {
      const k = blobKey(d);
      if (present.has(k) || seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  }

  async has(d: BlobDigest): Promise<boolean> {
    return (await this.missing([d], false)).length === 0;
  }

  /**
   * Records blobs that landed. UNAVAILABLE when one was evicted while it was being written (its
   * object went with the eviction): the writer uploads it again.
   */
  async add(digests: readonly BlobDigest[]): Promise<void> {
    const lost = await Promise.all(
      [...this.byShard(digests)].map(([key, group]) => this.shard(group[0]![0]).add(group, this.owner(key))),
    );
    const gone = lost.flat();
    if (gone.length) {
      throw new ConnectError(`blob(s) ${gone.join(", ")} were evicted while being written; upload them again`, Code.Unavailable);
    }
  }

  /** A read found no object for this blob: drop its row (unless written since the read began). */
  async forget(hash: string, readStartedAt: number): Promise<void> {
    await this.shard(hash).forget([hash], readStartedAt);
  }
}
