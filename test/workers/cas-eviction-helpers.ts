// Helpers for the eviction, heal and reconcile tests: a tenant of its own per test (an admin key in
// API_KEYS), blobs that land in one chosen index shard, and a controllable clock for last access.
import { SELF, env, runInDurableObject } from "cloudflare:test";
import { afterEach } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { CasIndex } from "../../src/storage/cas-index.ts";
import { SMALL_BLOB_MAX_BYTES } from "../../src/shared/small-blob-size.ts";
import type { CasIndexDO, EvictStepOptions } from "../../durable-objects/cas-index.ts";
import { connectClient, digestOf } from "./helpers.ts";

export interface Tenant {
  tenant: string;
  headers: Record<string, string>;
  cas: ReturnType<typeof connectClient<typeof ContentAddressableStorage>>;
  index: CasIndex;
}

const SETTINGS = ["API_KEYS", "CAS_MAX_BYTES", "CAS_MAX_IDLE_DAYS", "CAS_MIN_LIFETIME_HOURS", "AC_MAX_IDLE_DAYS", "CAS_TOUCH_INTERVAL_SECONDS"] as const;

/** Sets API_KEYS (an admin key for a fresh tenant) and the given settings; returns a restore function. */
function withTenant(settings: Partial<Record<(typeof SETTINGS)[number], string>> = {}): { t: Tenant; restore: () => void } {
  const saved = Object.fromEntries(SETTINGS.map((k) => [k, env[k]]));
  const tenant = `evict-${crypto.randomUUID().slice(0, 8)}`;
  const key = `k-${crypto.randomUUID()}-${crypto.randomUUID()}`;
  env.API_KEYS = JSON.stringify([{ key, tenant, name: "operator", admin: true }]);
  for (const k of SETTINGS.slice(1)) delete env[k];
  // The worker refuses a touch interval that is not below the minimum lifetime (cas-index-config.ts):
  // tests without a minimum lifetime touch on every call.
  Object.assign(env, settings.CAS_MIN_LIFETIME_HOURS === "0" ? { CAS_TOUCH_INTERVAL_SECONDS: "0" } : {}, settings);
  const headers = { authorization: `Bearer ${key}` };
  return {
    t: { tenant, headers, cas: connectClient(ContentAddressableStorage, headers), index: new CasIndex(env, tenant) },
    restore: () => {
      for (const k of SETTINGS) {
        if (saved[k] === undefined) delete env[k];
        else env[k] = saved[k];
      }
    },
  };
}

/** For a test file: `setup(settings)` gives each test a fresh tenant; settings are restored after it. */
export function tenantPerTest(): (settings?: Parameters<typeof withTenant>[0]) => Tenant {
  let restore = () => {};
  afterEach(() => restore());
  return (settings = {}) => {
    const w = withTenant(settings);
    restore = w.restore;
    return w.t;
  };
}

export interface TestBlob {
  data: Uint8Array;
  digest: { hash: string; sizeBytes: bigint };
}

/** `n` blobs of `size` bytes whose hashes start with `prefix` (so they share one index shard). */
export async function blobsInShard(tag: string, prefix: string, n: number, size: number): Promise<TestBlob[]> {
  const out: TestBlob[] = [];
  for (let i = 0; out.length < n; i++) {
    const data = new TextEncoder().encode(`${tag}:${i}:`.padEnd(size, "x"));
    const digest = await digestOf(data);
    if (digest.hash.startsWith(prefix)) out.push({ data, digest });
  }
  return out;
}

export async function store(t: Tenant, blobs: TestBlob[]): Promise<void> {
  const r = await t.cas.batchUpdateBlobs({ requests: blobs.map((b) => ({ digest: b.digest, data: b.data })) });
  if (r.responses.some((x) => x.status?.code)) throw new Error(`upload failed: ${JSON.stringify(r.responses.map((x) => x.status))}`);
}

/** The hashes FindMissingBlobs reports missing. */
export async function missing(t: Tenant, blobs: TestBlob[]): Promise<Set<string>> {
  const r = await t.cas.findMissingBlobs({ blobDigests: blobs.map((b) => b.digest) });
  return new Set(r.missingBlobDigests.map((d) => d.hash));
}

export const objectExists = async (t: Tenant, b: TestBlob) => (await env.CAS.head(`cas/${t.tenant}/${b.digest.hash}`)) !== null;

/** Blobs of this size are stored in R2; smaller ones are kept in the index (small-blobs.ts). */
export const R2_BLOB_BYTES = SMALL_BLOB_MAX_BYTES + 100;

/** Whether the blob's bytes are still held anywhere: an R2 object, or a small blob in its index shard. */
export async function bytesHeld(t: Tenant, b: TestBlob): Promise<boolean> {
  if (await objectExists(t, b)) return true;
  return runInDurableObject(t.index.shard(b.digest.hash), (_o: CasIndexDO, state) =>
    state.storage.sql.exec(`SELECT COUNT(*) AS n FROM small_blobs WHERE hash = ?`, b.digest.hash).one().n === 1,
  );
}

/** The fake clock's half on the index side: the blob was last used at `at`. */
export async function lastUsedAt(t: Tenant, b: TestBlob, at: number): Promise<void> {
  await runInDurableObject(t.index.shard(b.digest.hash), (_o, state) => {
    state.storage.sql.exec(`UPDATE blobs SET last_access = ? WHERE hash = ?`, at, b.digest.hash);
  });
}

/** One eviction step on the shard holding `hash`, at the fake time in opts.now. */
export function evictStep(t: Tenant, hash: string, opts: EvictStepOptions) {
  return runInDurableObject(t.index.shard(hash), (o: CasIndexDO) => o.evictStep(opts));
}

export async function admin(t: Tenant, method: "GET" | "POST", path: string): Promise<{ status: number; body: any }> {
  const res = await SELF.fetch(`http://kiln${path}`, { method, headers: t.headers });
  return { status: res.status, body: await res.json() };
}
