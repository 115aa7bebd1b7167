// /metrics series for CAS storage, read from the CAS index shards at scrape time (so, unlike the
// per-isolate request counters, they are totals): bytes and blobs per tenant, evictions, heals.
import { kilnEnv } from "../config.ts";
import { knownTenants, tenantStats } from "../services/cas-admin.ts";

export async function renderStorageMetrics(): Promise<string> {
  const env = kilnEnv();
  const stats = await Promise.all((await knownTenants()).map((t) => tenantStats(env, t)));
  const out: string[] = [];
  const series = (name: string, type: "gauge" | "counter", help: string, rows: [string, number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of rows) out.push(`${name}{${labels}} ${v}`);
  };
  const t = (tenant: string, extra = "") => `tenant="${tenant.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"${extra}`;
  series("kiln_cas_bytes", "gauge", "Bytes of CAS blobs in the index, per tenant (all index shards).", stats.map((s) => [t(s.tenant), s.bytes]));
  series("kiln_cas_blobs", "gauge", "CAS blobs in the index, per tenant (all index shards).", stats.map((s) => [t(s.tenant), s.blobs]));
  series(
    "kiln_cas_evictions_total",
    "counter",
    "CAS blobs evicted, per tenant, by reason (idle: past CAS_MAX_IDLE_DAYS; budget: over CAS_MAX_BYTES).",
    stats.flatMap((s) => [
      [t(s.tenant, ',reason="idle"'), s.counters.evicted_idle ?? 0],
      [t(s.tenant, ',reason="budget"'), s.counters.evicted_budget ?? 0],
    ]),
  );
  series("kiln_cas_evicted_bytes_total", "counter", "Bytes of CAS blobs evicted, per tenant.", stats.map((s) => [t(s.tenant), s.counters.evicted_bytes ?? 0]));
  series("kiln_cas_index_heals_total", "counter", "Index rows dropped because a read found no object, per tenant.", stats.map((s) => [t(s.tenant), s.counters.healed ?? 0]));
  series("kiln_action_cache_expired_total", "counter", "Action-cache entries deleted past AC_MAX_IDLE_DAYS, per tenant.", stats.map((s) => [t(s.tenant), s.counters.ac_expired ?? 0]));
  return out.join("\n") + "\n";
}
