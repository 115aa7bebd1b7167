// GET /admin/cas-index: what each CAS index object of the caller's tenant has served since it was
// loaded (requests, rows written) and the blobs it holds. Admin keys only. The load simulator
// (bench/index-load.ts) reads it to measure requests/s per object; operators can spot a hot shard.
import type { Hono } from "hono";
import { authorizeAdmin } from "../auth.ts";
import { callerOf } from "../caller.ts";
import { kilnEnv } from "../config.ts";
import { invalidArgument, restErrorResponse } from "../errors.ts";
import { CasIndex } from "../storage/cas-index.ts";

/** Objects read per call: each is one Durable Object request, within the subrequest limit. */
const MAX_PER_CALL = 256;

export function mountCasIndexStats(app: Hono) {
  app.get("/admin/cas-index", async (c) => {
    try {
      const principal = await callerOf(c.req.raw.headers, c.req.url);
      authorizeAdmin(principal);
      const index = new CasIndex(kilnEnv(), principal.tenant);
      const from = Number(c.req.query("from") ?? "0");
      if (!Number.isSafeInteger(from) || from < 0) throw invalidArgument(`from "${c.req.query("from")}" is not a shard number`, "from");
      const shards = Array.from({ length: Math.max(0, Math.min(MAX_PER_CALL, index.shards - from)) }, (_, i) => from + i);
      const objects = await Promise.all(shards.map(async (shard) => ({ shard, ...(await index.shardStub(shard).servedStats()) })));
      const next = from + shards.length < index.shards ? from + shards.length : undefined;
      return c.json({ tenant: principal.tenant, shards: index.shards, objects, next, now: Date.now() });
    } catch (e) {
      return restErrorResponse(e);
    }
  });
}
