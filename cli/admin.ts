// `kiln admin stats|evict|reconcile`: the operator's calls on the CAS (the worker's /admin/cas/*
// routes; an admin key in KILN_API_KEY where keys are configured).
import { parseArgs } from "node:util";

export const ADMIN_USAGE = `kiln admin stats [--tenant T] [--upstream URL]
                                             CAS bytes, blobs, evictions per tenant (all index shards)
  kiln admin evict [--tenant T] [--idle-seconds N] [--upstream URL]
                                             evict now what the settings allow (the alarms do it anyway), and with
                                             --idle-seconds also every blob idle that long (never within
                                             CAS_MIN_LIFETIME_HOURS)
  kiln admin reconcile [--tenant T] [--cursor C] [--upstream URL]
                                             repair the CAS index against R2 both ways, step by step;
                                             resumes from --cursor (printed after every step)
                                             env: KILN_API_KEY (an admin key)`;

interface Options {
  upstream: string;
  apiKey?: string;
  log?: (line: string) => void;
}

async function call(o: Options, method: "GET" | "POST", path: string, query: Record<string, string | undefined>): Promise<any> {
  const url = new URL(path, o.upstream.replace(/\/?$/, "/"));
  for (const [k, v] of Object.entries(query)) if (v) url.searchParams.set(k, v);
  let res: Response;
  try {
    res = await fetch(url, { method, headers: o.apiKey ? { authorization: `Bearer ${o.apiKey}` } : {} });
  } catch (e) {
    throw new Error(`cannot reach ${o.upstream} (${(e as Error).cause ?? e}); is Kiln running there? (--upstream)`);
  }
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${url.pathname}: HTTP ${res.status} from ${o.upstream}, not Kiln's JSON: ${text.slice(0, 200)}`);
  }
  if (!res.ok) {
    const hint = res.status === 401 || res.status === 403 ? " (set KILN_API_KEY to an admin key)" : "";
    throw new Error(`${url.pathname}: ${body?.error?.message ?? `HTTP ${res.status}`}${hint}`);
  }
  return body;
}

export interface ReconcileTotals {
  steps: number;
  listed: number;
  added: number;
  removed: number;
  cursor: string;
}

/** Reconcile steps until done; every step's cursor is logged, so an interrupted run can resume. */
export async function reconcileAll(o: Options, tenant?: string, cursor = ""): Promise<ReconcileTotals> {
  const t: ReconcileTotals = { steps: 0, listed: 0, added: 0, removed: 0, cursor };
  for (;;) {
    const r = await call(o, "POST", "admin/cas/reconcile", { tenant, cursor: t.cursor });
    t.steps++;
    t.listed += r.listed;
    t.added += r.added;
    t.removed += r.removed;
    t.cursor = r.cursor;
    o.log?.(`step ${t.steps}: listed ${r.listed}, added ${r.added}, removed ${r.removed}${r.done ? ", done" : `; resume with --cursor ${r.cursor}`}`);
    if (r.done) return t;
  }
}

export const casStats = (o: Options, tenant?: string) => call(o, "GET", "admin/cas/stats", { tenant });
/** Eviction steps until no shard has more to do. */
export async function evictAll(o: Options, tenant?: string, idleSeconds?: string): Promise<{ tenant: string; evicted: number; bytes: number }> {
  const total = { tenant: tenant ?? "", evicted: 0, bytes: 0 };
  for (;;) {
    const r = await call(o, "POST", "admin/cas/evict", { tenant, idle_seconds: idleSeconds });
    total.tenant = r.tenant;
    total.evicted += r.evicted;
    total.bytes += r.bytes;
    if (!r.more) return total;
  }
}

const human = (n: number) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(2)} MiB` : `${n} B`);

export async function adminMain(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      upstream: { type: "string", default: "http://127.0.0.1:8787" },
      tenant: { type: "string" },
      cursor: { type: "string" },
      "idle-seconds": { type: "string" },
    },
  });
  const o: Options = { upstream: values.upstream, apiKey: process.env.KILN_API_KEY || undefined, log: (l) => console.log(`kiln admin reconcile: ${l}`) };
  const [sub, ...rest] = positionals;
  if (rest.length) throw new Error(`unexpected arguments: ${rest.join(" ")}`);
  if (sub === "stats") {
    const { tenants } = await casStats(o, values.tenant);
    for (const s of tenants) {
      const c = s.counters;
      console.log(
        `${s.tenant}: ${s.blobs} blobs, ${human(s.bytes)}; evicted ${c.evicted_idle} idle + ${c.evicted_budget} over budget (${human(c.evicted_bytes)}); ` +
          `healed ${c.healed}; reconcile +${c.reconcile_added} -${c.reconcile_removed}; action-cache entries expired ${c.ac_expired}`,
      );
    }
  } else if (sub === "evict") {
    const r = await evictAll(o, values.tenant, values["idle-seconds"]);
    console.log(`kiln admin evict: ${r.tenant}: evicted ${r.evicted} blobs (${human(r.bytes)})`);
  } else if (sub === "reconcile") {
    const t = await reconcileAll(o, values.tenant, values.cursor ?? "");
    console.log(`kiln admin reconcile: done in ${t.steps} steps: ${t.listed} objects listed, ${t.added} rows added, ${t.removed} rows removed`);
  } else {
    throw new Error(`needs stats, evict or reconcile\nusage:\n  ${ADMIN_USAGE}`);
  }
}
