// The Kiln worker: every surface on one origin, over one service layer.
import { Hono } from "hono";
import { keyConfig } from "./config.ts";
import { mountBlobs } from "./surfaces/blobs.ts";
import { mountConnect } from "./surfaces/connect.ts";
import { corsMiddleware } from "./surfaces/cors.ts";
import { mountHttpCache } from "./surfaces/http-cache.ts";
import { mountRest } from "./surfaces/rest.ts";
import { mountRunners } from "./surfaces/runners.ts";
import { answerAfterBody } from "./surfaces/request-body.ts";
import { restErrorResponse, notFound } from "./errors.ts";

export { CasIndexDO } from "../durable-objects/cas-index.ts";
export { OperationDO } from "../durable-objects/operation.ts";
export { RunnerPoolDO } from "../durable-objects/runner-pool.ts";
export { InvocationDO } from "../durable-objects/invocation.ts";
export { RunnerContainer } from "../durable-objects/runner-container.ts";
export type { Env } from "./env.ts";

const app = new Hono();
app.use("*", answerAfterBody);

// First, so preflights are answered and every response (errors included) carries the CORS headers.
app.use("*", corsMiddleware);
app.get("/healthz", async (c) => c.json({ ok: true, auth: (await keyConfig()).open ? "open" : "keys" }));
mountRunners(app);
mountConnect(app);
mountHttpCache(app);
mountRest(app);
mountBlobs(app);
app.notFound((c) => restErrorResponse(notFound(`no route for ${c.req.method} ${new URL(c.req.url).pathname}`)));
app.onError((e) => restErrorResponse(e));

export default app;
