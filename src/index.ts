// The Kiln worker: every surface on one origin, over one service layer.
import { Hono } from "hono";
import { keyConfig } from "./config.ts";
import { mountAdmin } from "./surfaces/admin.ts";
import { mountBlobs } from "./surfaces/blobs.ts";
import { mountCasIndexStats } from "./surfaces/cas-index-stats.ts";
import { mountConnect } from "./surfaces/connect.ts";
import { corsMiddleware } from "./surfaces/cors.ts";
import { mountHttpCache } from "./surfaces/http-cache.ts";
import { mountRest } from "./surfaces/rest.ts";
import { mountRunners } from "./surfaces/runners.ts";
import { answerAfterBody } from "./surfaces/request-body.ts";
import { asConnectError, restErrorResponse, notFound } from "./errors.ts";
import { callerOf } from "./caller.ts";
import { withAccessLog } from "./access-log.ts";
import { authorizeAdmin } from "./auth.ts";
import { renderMetrics } from "./metrics/exposition.ts";
import { renderStorageMetrics } from "./metrics/storage.ts";
import { CasIndexDO as CasIndex } from "../durable-objects/cas-index.ts";
import { OperationDO as Operation } from "../durable-objects/operation.ts";
import { RunnerPoolDO as RunnerPool } from "../durable-objects/runner-pool.ts";
import { InvocationDO as Invocation } from "../durable-objects/invocation.ts";
import { meteredObject } from "./metrics/metered-object.ts";
export { RunnerContainer } from "../durable-objects/runner-container.ts";
export type { Env } from "./env.ts";
// Each object's own billed work (its alarms, WebSocket messages, R2 calls) counted for /metrics.
export const CasIndexDO = meteredObject(CasIndex, "CAS_INDEX");
export const OperationDO = meteredObject(Operation, "OPERATION");
export const RunnerPoolDO = meteredObject(RunnerPool, "RUNNER_POOL");
export const InvocationDO = meteredObject(Invocation, "INVOCATION");
// The same names as types, for the bindings wrangler types generates (DurableObjectNamespace<...>).
export type CasIndexDO = CasIndex;
export type OperationDO = Operation;
export type RunnerPoolDO = RunnerPool;
export type InvocationDO = Invocation;

const app = new Hono();
app.use("*", answerAfterBody);

// First, so preflights are answered and every response (errors included) carries the CORS headers.
app.use("*", corsMiddleware);
app.get("/healthz", async (c) => {
  try {
    const config = await keyConfig();
    if (!config.open) return c.json({ ok: true, auth: "keys" });
    const anonymous = await callerOf(c.req.raw.headers, c.req.url);
    return c.json(anonymous.canWrite ? { ok: true, auth: "open" } : { ok: true, auth: "open-read-only", reason: anonymous.readOnlyReason });
  } catch (e) {
    // A malformed API_KEYS: every call is refused, and the health check says why.
    return c.json({ ok: false, auth: "invalid", error: asConnectError(e).rawMessage }, 503);
  }
});
app.get("/metrics", async (c) => {
  try {
    authorizeAdmin(await callerOf(c.req.raw.headers, c.req.url));
    return new Response((await renderMetrics()) + (await renderStorageMetrics()), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
  } catch (e) {
    return restErrorResponse(e);
  }
});
mountRunners(app);
mountCasIndexStats(app);
mountAdmin(app);
mountConnect(app);
mountHttpCache(app);
mountRest(app);
mountBlobs(app);
app.notFound((c) => restErrorResponse(notFound(`no route for ${c.req.method} ${new URL(c.req.url).pathname}`)));
app.onError((e) => restErrorResponse(e));

export default { fetch: withAccessLog(app.fetch) };
