// Where action-cache entries live in R2: one object per (tenant, instance name, action hash).
import { toBinary } from "@bufbuild/protobuf";
import { ActionResultSchema, type ActionResult } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import type { Env } from "../env.ts";
import { invalidArgument, unavailableFrom } from "../errors.ts";
import { evictionPolicy } from "./eviction-policy.ts";
import { upkeep } from "./upkeep.ts";

/** Largest serialized ActionResult we store (inline contents included). */
export const MAX_ACTION_RESULT_BYTES = 16 * 1024 * 1024;

export const actionResultKey = (tenant: string, instanceName: string, actionHash: string) =>
  `ac/${tenant}/${encodeURIComponent(instanceName)}/${actionHash}`;

/**
 * Stores an entry. The key holds only the action's hash (the Bazel HTTP cache knows no sizes);
 * the action's size, when known, goes beside it, so a lookup under a wrong size misses. `writer`
 * records who produced it (an API key's name, or a runner and its runner key), for operators.
 */
export async function putActionResult(bucket: R2Bucket, key: string, result: ActionResult, actionSize?: number, writer?: string): Promise<void> {
  const bytes = toBinary(ActionResultSchema, result);
  if (bytes.byteLength > MAX_ACTION_RESULT_BYTES) {
    throw invalidArgument(`the action result is ${bytes.byteLength} bytes, over ${MAX_ACTION_RESULT_BYTES}`, "action_result");
  }
  const customMetadata: Record<string, string> = {};
  if (actionSize !== undefined) customMetadata[ACTION_SIZE] = String(actionSize);
  if (writer) customMetadata[WRITER] = writer.slice(0, 256);
  await bucket.put(key, bytes, { customMetadata }).catch((e: unknown) => {
    throw acUnavailable("stored", e);
  });
}

/** R2 failing an action-cache read or write: UNAVAILABLE with the reason, which clients retry. */
const acUnavailable = (what: "read" | "stored", e: unknown) => unavailableFrom(`the action cache entry could not be ${what}`, e);

const ACTION_SIZE = "action-size";
/** R2 custom metadata naming who wrote an entry. */
export const WRITER = "writer";

/** Whether a stored entry may answer for an action of this size (undefined: size not known). */
function sizeMatches(obj: R2Object, actionSize: number | undefined): boolean {
  const stored = obj.customMetadata?.[ACTION_SIZE];
  return actionSize === undefined || stored === undefined || Number(stored) === actionSize;
}

/**
 * The stored entry's object and bytes; null if absent, or recorded for an action of another size.
 * R2 failing the read (at its start or mid-way) is UNAVAILABLE: a fault to retry, not a miss.
 */
export async function readActionResult(bucket: R2Bucket, key: string, actionSize: number | undefined): Promise<{ obj: R2Object; bytes: Uint8Array } | null> {
  const obj = await bucket.get(key).catch((e: unknown) => Promise.reject(acUnavailable("read", e)));
  if (!obj) return null;
  if (!sizeMatches(obj, actionSize)) {
    await obj.body.cancel();
    return null;
  }
  const bytes = new Uint8Array(await obj.arrayBuffer().catch((e: unknown): Promise<ArrayBuffer> => Promise.reject(acUnavailable("read", e))));
  return { obj, bytes };
}

/** A hit on an entry older than this share of AC_MAX_IDLE_DAYS (at most a day) rewrites it. */
const REFRESH_FRACTION = 0.25;
const DAY_MS = 24 * 3600 * 1000;
/** R2 custom metadata: when a hit last refreshed the entry (ms since the epoch). */
const USED = "used";

/** When an entry was last written or refreshed by a hit. */
export const lastUsed = (obj: R2Object) => Number(obj.customMetadata?.[USED]) || obj.uploaded.getTime();

/**
 * R2 keeps no access time, so the action-cache sweeper ages entries by lastUsed: a hit on an entry
 * that has aged a while writes it again (at most one write per entry per refresh interval, not one
 * per hit), so entries in use never expire. A refresh that fails is logged, not thrown: the hit
 * stands, and the next hit tries again.
 */
export async function refreshIfAgeing(env: Env, obj: R2Object, bytes: Uint8Array, now = Date.now()): Promise<void> {
  const maxIdle = evictionPolicy(env).acMaxIdleMs;
  if (maxIdle === undefined) return;
  if (now - lastUsed(obj) < Math.min(maxIdle * REFRESH_FRACTION, DAY_MS)) return;
  // Only over the entry that was read: an UpdateActionResult that landed since is newer, and wins.
  await upkeep(env.CAS.put(obj.key, bytes, { customMetadata: { ...obj.customMetadata, [USED]: String(now) }, onlyIf: { etagMatches: obj.etag } }), "ac_refresh_failed", { key: obj.key });
}
