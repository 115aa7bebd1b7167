// Routing to the runner pool: which RunnerPoolDO shard owns an operation, and the types the pool
// and its callers share. An action's shard is a hash of its tenant and action digest, so
// identical actions meet in one shard (in-flight dedup) while different ones spread over shards.
import type { Env } from "../env.ts";
import { poolShardCount } from "../config.ts";

export interface PoolEntry {
  /** The shard this entry belongs to (shardOf). */
  shard: number;
  /** `operations/{uuid}`. */
  name: string;
  tenant: string;
  instanceName: string;
  actionDigest: { hash: string; size: number };
  /** ExecutionPolicy.priority, already clamped: lower runs sooner. */
  priority: number;
  /** null: never merged (do_not_cache actions). */
  dedupKey: string | null;
  /** Sorted (name, value) pairs the action asks for. */
  platform: [string, string][];
  timeoutMs: number;
  queuedAt: number;
  /**
   * The origin the Execute call arrived at (its URL, not its body): where runner containers dial
   * when PUBLIC_URL is unset.
   */
  origin?: string;
  /** The serialized Action and Command, handed to the runner with the assignment. */
  action: Uint8Array;
  command: Uint8Array;
}

export type EnqueueResult = { kind: "queued" | "joined"; name: string } | { kind: "refused"; reason: string };

/** What the pool tells an operation, through its outbox (retried until delivered). */
export type OperationEvent =
  | { kind: "started"; attempt: number; runner: string }
  | { kind: "requeued"; attempt: number; reason: string }
  | { kind: "completed"; response: Uint8Array };

export function shardOf(tenant: string, actionHash: string, shards = poolShardCount()): number {
  if (shards <= 1) return 0;
  // FNV-1a over tenant and digest: cheap, stable, and spreads hex digests evenly.
  let h = 0x811c9dc5;
  for (const c of `${tenant}\n${actionHash}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h % shards;
}

export const poolStub = (env: Env, shard: number) => env.RUNNER_POOL.get(env.RUNNER_POOL.idFromName(`pool-${shard}`));

/** Whether a runner offering `offered` (name, value) pairs can run an action asking `wanted`. */
export const offers = (offered: [string, string][], wanted: [string, string][]) =>
  wanted.every(([k, v]) => offered.some(([ok, ov]) => ok === k && ov === v));

export const describePlatform = (p: [string, string][]) => p.map(([k, v]) => `${k}=${v}`).join(", ") || "(none)";
