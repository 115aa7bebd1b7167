// Hit and miss counts of the two caches, for the hit ratios /metrics shows.
import { Code, ConnectError } from "@connectrpc/connect";
import { tally } from "./request-tally.ts";

const result = (hit: boolean) => (hit ? "hit" : "miss");

/** One action-cache lookup: by GetActionResult ("get") or by Execute before it queues ("execute"). */
export const countActionCacheLookup = (hit: boolean, via: "get" | "execute") => tally("kiln_action_cache_lookups_total", { via, result: result(hit) });

/** FindMissingBlobs: digests found and digests missing. */
export function countFindMissing(asked: number, missing: number): void {
  tally("kiln_cas_lookups_total", { kind: "find_missing", result: "hit" }, asked - missing);
  tally("kiln_cas_lookups_total", { kind: "find_missing", result: "miss" }, missing);
}

/** A blob read: a hit when it resolves to something, a miss when null or NOT_FOUND. */
export async function countedRead<T>(read: Promise<T>): Promise<T> {
  try {
    const out = await read;
    tally("kiln_cas_lookups_total", { kind: "read", result: result(out !== null) });
    return out;
  } catch (e) {
    if (e instanceof ConnectError && e.code === Code.NotFound) tally("kiln_cas_lookups_total", { kind: "read", result: "miss" });
    throw e;
  }
}
