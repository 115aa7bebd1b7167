// Operator calls on the CAS: per-tenant size and counters (summed across index shards), an
// eviction pass now, and a reconcile step. Behind an admin key (see auth.ts); served by
// surfaces/admin.ts as `kiln admin stats|evict|reconcile` call them.
import { authorizeAdmin, authorizeWrite, type Principal } from "../auth.ts";
import { keyConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { invalidArgument } from "../errors.ts";
import { CasIndex } from "../storage/cas-index.ts";
import { reconcileStep, type ReconcileStep } from "../storage/reconcile.ts";
import type { Counter } from "../../durable-objects/cas-eviction.ts";

export interface TenantStats {
  tenant: string;
  bytes: number;
  blobs: number;
  counters: Record<Counter, number>;
}

/** The tenants Kiln serves: those named in API_KEYS, or "default" when it runs open. */
export async function knownTenants(): Promise<string[]> {
  const config = await keyConfig();
  if (config.open) return ["default"];
  return [...new Set(config.keys.map((k) => k.principal.tenant))].sort();
}

export async function tenantStats(env: Env, tenant: string): Promise<TenantStats> {
  const shards = await Promise.all(new CasIndex(env, tenant).allShards().map((s) => s.stub.stats()));
  const sum: TenantStats = { tenant, bytes: 0, blobs: 0, counters: {} as Record<Counter, number> };
  for (const s of shards) {
    sum.bytes += s.bytes;
    sum.blobs += s.blobs;
    for (const [k, n] of Object.entries(s.counters) as [Counter, number][]) sum.counters[k] = (sum.counters[k] ?? 0) + n;
  }
  return sum;
}

/** A tenant named by the operator must be one API_KEYS configures (or "default" when open). */
async function tenantParam(t: string | undefined): Promise<string | undefined> {
  if (t === undefined || t === "") return undefined;
  const known = await knownTenants();
  if (!known.includes(t)) throw invalidArgument(`tenant "${t.slice(0, 140)}" is not configured (known: ${known.join(", ")})`, "tenant");
  return t;
}

export async function casStats(env: Env, p: Principal, tenant?: string): Promise<TenantStats[]> {
  authorizeAdmin(p);
  const t = await tenantParam(tenant);
  return Promise.all((t ? [t] : await knownTenants()).map((x) => tenantStats(env, x)));
}

/**
 * One eviction step on every shard of the tenant, now (the alarms do the same on their own).
 * `idleSeconds`: also evict what has been idle that long (still never within the minimum lifetime).
 */
export async function evictNow(
  env: Env,
  p: Principal,
  tenant?: string,
  idleSeconds?: string,
): Promise<{ tenant: string; evicted: number; bytes: number; more: boolean }> {
  authorizeAdmin(p);
  authorizeWrite(p);
  const t = (await tenantParam(tenant)) ?? p.tenant;
  let maxIdleMs: number | undefined;
  if (idleSeconds !== undefined && idleSeconds !== "") {
    const n = Number(idleSeconds);
    if (!Number.isFinite(n) || n < 0) throw invalidArgument(`idle_seconds "${idleSeconds.slice(0, 40)}" is not a number of seconds`, "idle_seconds");
    maxIdleMs = n * 1000;
  }
  const steps = await Promise.all(new CasIndex(env, t).allShards().map((s) => s.stub.evictStep({ maxIdleMs })));
  return {
    tenant: t,
    evicted: steps.reduce((n, s) => n + s.evicted, 0),
    bytes: steps.reduce((n, s) => n + s.bytes, 0),
    more: steps.some((s) => s.more),
  };
}

export async function reconcile(env: Env, p: Principal, tenant?: string, cursor?: string): Promise<ReconcileStep & { tenant: string }> {
  authorizeAdmin(p);
  authorizeWrite(p);
  const t = (await tenantParam(tenant)) ?? p.tenant;
  if (cursor && !/^[0-9a-f]{1,64}$/.test(cursor)) throw invalidArgument(`cursor "${cursor.slice(0, 80)}" is not one a reconcile step returned`, "cursor");
  return { tenant: t, ...(await reconcileStep(env, t, cursor ?? "")) };
}
