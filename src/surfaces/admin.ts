// Operator routes (JSON; an admin key where keys are configured): what `kiln admin` calls.
//   GET  /admin/cas/stats[?tenant=T]             per-tenant bytes, blobs and counters, summed across shards
//   POST /admin/cas/evict[?tenant=T&idle_seconds=N] one eviction step on every shard, now (N: also what is idle N s)
//   POST /admin/cas/reconcile[?tenant=T&cursor=C] one bounded reconcile step; pass the cursor back
// Parameters ride in the query string, so no body is read, before or after authentication.
import type { Context, Hono } from "hono";
import { callerOf } from "../caller.ts";
import { kilnEnv } from "../config.ts";
import { restErrorResponse } from "../errors.ts";
import { casStats, evictNow, reconcile } from "../services/cas-admin.ts";

const answer = (run: (c: Context) => Promise<unknown>) => async (c: Context) => {
  try {
    return c.json(await run(c));
  } catch (e) {
    return restErrorResponse(e);
  }
};

const caller = (c: Context) => callerOf(c.req.raw.headers, c.req.url);

export function mountAdmin(app: Hono): void {
  app.get(
    "/admin/cas/stats",
    answer(async (c) => ({ tenants: await casStats(kilnEnv(), await caller(c), c.req.query("tenant")) })),
  );
  app.post(
    "/admin/cas/evict",
    answer(async (c) => evictNow(kilnEnv(), await caller(c), c.req.query("tenant"), c.req.query("idle_seconds"))),
  );
  app.post(
    "/admin/cas/reconcile",
    answer(async (c) => reconcile(kilnEnv(), await caller(c), c.req.query("tenant"), c.req.query("cursor"))),
  );
}
