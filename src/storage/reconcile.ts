// Repairs a tenant's CAS index against R2, both ways, one bounded step at a time: lists up to a
// page of objects after the cursor (R2 lists keys in order, and keys are cas/<tenant>/<hash>), and
// hands every shard the listed objects that belong to it and the hash range the page covers.
// Each step is independent, so a stopped reconcile resumes from the cursor it last returned.
import type { Env } from "../env.ts";
import { CasIndex } from "./cas-index.ts";

export interface ReconcileStep {
  /** Pass back to continue; "" with done: finished. */
  cursor: string;
  done: boolean;
  /** Objects listed in this step. */
  listed: number;
  /** Rows added for objects that had none. */
  added: number;
  /** Rows removed whose objects were gone. */
  removed: number;
}

const HASH = /^[0-9a-f]{64}$/;
/** R2 lists at most 1,000 keys per call. */
export const RECONCILE_PAGE = 1000;

export async function reconcileStep(env: Env, tenant: string, cursor = "", pageSize = RECONCILE_PAGE): Promise<ReconcileStep> {
  const index = new CasIndex(env, tenant);
  const prefix = `cas/${tenant}/`;
  const listedAt = Date.now();
  const page = await env.CAS.list({ prefix, startAfter: cursor ? prefix + cursor : undefined, limit: Math.min(pageSize, RECONCILE_PAGE) });
  const lastHash = page.objects.at(-1)?.key.slice(prefix.length);
  // Never read "truncated but empty" as the end: that would drop every row after the cursor.
  if (page.truncated && !lastHash) return { cursor, done: false, listed: 0, added: 0, removed: 0 };
  // The range this page covers: up to its last key, or (the listing exhausted) to the end.
  const upTo = page.truncated && lastHash ? lastHash : null;
  const byShard = new Map<number, [string, number][]>();
  for (const o of page.objects) {
    const hash = o.key.slice(prefix.length);
    if (!HASH.test(hash)) continue;
    const key = index.shardKeyOf(hash);
    let g = byShard.get(key);
    if (!g) byShard.set(key, (g = []));
    g.push([hash, o.size]);
  }
  const results = await Promise.all(
    index.allShards().map((s) => s.stub.reconcileRange(cursor, upTo, byShard.get(s.key) ?? [], listedAt, s.owner)),
  );
  const more = results.some((r) => r.more);
  const next = more ? cursor : (upTo ?? "");
  return {
    cursor: next,
    done: !more && upTo === null,
    listed: page.objects.length,
    added: results.reduce((n, r) => n + r.added, 0),
    removed: results.reduce((n, r) => n + r.removed, 0),
  };
}
