// Client side of the CAS index: groups digests by shard and asks the shards in parallel.
import type { Env } from "../env.ts";
import { blobKey, isEmptyBlob, type BlobDigest } from "./digest.ts";

const SHARD_HEX_DIGITS = 1; // 16 shards per tenant

export class CasIndex {
  constructor(
    private readonly env: Env,
    private readonly tenant: string,
  ) {}

  shard(hash: string) {
    const ns = this.env.CAS_INDEX;
    return ns.get(ns.idFromName(`${this.tenant}:${hash.slice(0, SHARD_HEX_DIGITS)}`));
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

  async add(digests: readonly BlobDigest[]): Promise<void> {
    await Promise.all([...this.byShard(digests)].map(([, group]) => this.shard(group[0]![0]).add(group)));
  }
}
