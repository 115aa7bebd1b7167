// Connect and gRPC-web for every service: the connect-es router behind one Hono route.
// (Native gRPC needs HTTP/2 trailers, which a Worker cannot send: Cloudflare's edge, or
// `kiln bridge` locally, turns it into gRPC-web before it reaches us.)
import { createRegistry } from "@bufbuild/protobuf";
import { createConnectRouter, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createFetchHandler, type UniversalHandler } from "@connectrpc/connect/protocol";
import type { Hono } from "hono";
import { file_google_rpc_error_details } from "../gen/google/rpc/error_details_pb.ts";
import { serviceFiles, services } from "../services/registry.ts";
import { admitCaller, requireCaller } from "../caller.ts";
import { interceptErrors } from "../error-interceptor.ts";
import { requestIdOf, withRequestId } from "../request-id.ts";
import { finishConnectErrors } from "./connect-errors.ts";
import { FIND_MISSING_PATH, findMissingFastLane } from "./find-missing-fast-lane.ts";
import { READ_PATH, byteStreamReadLane } from "./bytestream-read-lane.ts";
import { UNREAD_BODY_DRAIN_MAX, requestBody } from "./request-body.ts";

/** Largest single message we accept: a 4 MiB batch plus framing headroom. */
const READ_MAX_BYTES = 8 * 1024 * 1024;

/**
 * A service that needs larger messages (ResultStore's 10 MiB UploadBatch) gets them on its own
 * routes only. The Connect JSON form of a message can be about 3x its binary size (field names,
 * base64 bytes), so JSON calls get three times the binary allowance.
 */
const readMaxFor = (maxRequestBytes: number | undefined) => (maxRequestBytes ? Math.max(READ_MAX_BYTES, 3 * maxRequestBytes) : READ_MAX_BYTES);

// The Connect JSON codec must resolve google.protobuf.Any (Operation.metadata and .response,
// google.rpc.Status.details) to the message types they carry.
const registry = createRegistry(file_google_rpc_error_details, ...serviceFiles());

/**
 * Errors a service throws get the request id; a fault that is not a ConnectError is logged with it
 * here, because connect-es turns it into "internal error" and drops the cause.
 */
const tagErrors = interceptErrors((e, req) => withRequestId(e, requestIdOf(req.header)));

const router = createConnectRouter({ readMaxBytes: READ_MAX_BYTES, jsonOptions: { registry } });
// The request gate runs before connect-es reads the body: a caller without a valid key is refused
// before the worker reads (up to readMaxBytes of) its message. Every registered service needs a key.
// The rate verdict is awaited once the message is in, before the method runs (admitCaller).
const requestGate = async (ctx: HandlerContext) => void (await admitCaller(ctx.requestHeader, ctx.url));
const rateVerdict: Interceptor = (next) => async (req) => {
  await requireCaller(req.header, req.url);
  return next(req);
};
for (const { service, impl, maxRequestBytes } of services) {
  router.service(service, impl, { readMaxBytes: readMaxFor(maxRequestBytes), requestGate, interceptors: [tagErrors, rateVerdict] });
}

// FindMissingBlobs and ByteStream.Read over plain gRPC-web skip the generic codec
// (find-missing-fast-lane.ts, bytestream-read-lane.ts).
const lanes = new Map([
  [FIND_MISSING_PATH, findMissingFastLane],
  [READ_PATH, byteStreamReadLane],
]);
const lane = (h: UniversalHandler) => lanes.get(h.requestPath)?.(h, readMaxFor(services.find((s) => s.service === h.service)?.maxRequestBytes)) ?? h;
/** The Connect router's own handler for a path, without its lane: what the lanes' tests compare with. */
export const routerOnly = (path: string) => {
  const h = router.handlers.find((x) => x.requestPath === path);
  return h && createFetchHandler(finishConnectErrors(h), { httpVersion: "1.1" });
};
const handlers = new Map(
  router.handlers.map((h) => [h.requestPath, createFetchHandler(finishConnectErrors(lane(h)), { httpVersion: "1.1" })] as const),
);

/**
 * A call can end while its client still sends: a unary call refused before its message is read
 * (no key, rate-limited), a client stream (ByteStream.Write: an upload) that fails or completes
 * early (a corrupt zstd frame, a blob another client stored meanwhile). connect-es then answers
 * without reading the rest, and over HTTP/1.1 that answer breaks the sender's connection: the
 * bridge reported EPIPE (INTERNAL) instead of the worker's status. So the body is handed out
 * through requestBody(), whose rest answerAfterBody reads before the answer goes out: connect-es
 * returns a response only once the request is read or the method has ended (a client stream's),
 * so nothing else is reading by then. An upload's rest is read whole, another call's up to
 * UNREAD_BODY_DRAIN_MAX. Bidi streams are left alone: they answer while their request still
 * arrives, and their body must stay the handler's alone.
 */
const restMaxByPath = new Map(
  router.handlers
    .filter((h) => h.method.methodKind !== "bidi_streaming")
    .map((h) => [h.requestPath, h.method.methodKind === "client_streaming" ? Infinity : UNREAD_BODY_DRAIN_MAX] as const),
);

export function mountConnect(app: Hono) {
  app.use("*", async (c, next) => {
    if (c.req.method !== "POST" && c.req.method !== "GET") return next();
    const path = new URL(c.req.url).pathname;
    const handler = handlers.get(path);
    if (!handler) return next();
    const req = c.req.raw;
    const restMax = restMaxByPath.get(path);
    return handler(restMax !== undefined && req.body ? new Request(req, { body: requestBody(req, restMax) }) : req);
  });
}
