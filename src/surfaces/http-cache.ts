// The Bazel HTTP cache protocol: GET/HEAD/PUT /cache/{instance...}/ac/{sha256} and .../cas/{sha256}.
// AC bodies are serialized ActionResults; CAS bodies are the blobs, verified against the hash.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Context, Hono } from "hono";
import {
  ActionCache,
  ActionResultSchema,
  GetActionResultRequestSchema,
  UpdateActionResultRequestSchema,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../gen/google/bytestream/bytestream_pb.ts";
import { Code, ConnectError, invalidArgument, restErrorResponse } from "../errors.ts";
import { getActionResult, updateActionResult } from "../services/action-cache.ts";
import { MAX_ACTION_RESULT_BYTES } from "../storage/action-store.ts";
import { blobSize, readBlobByHash, writeBlob } from "../services/blobs.ts";
import { parseHash, parseSize } from "../storage/digest.ts";
import { contextFor } from "./handler-context.ts";
import { parseRange } from "./http-range.ts";
import { uploadBody } from "./request-body.ts";
import { decodePath } from "./path-decode.ts";
import { admitCaller } from "../caller.ts";
import { readBodyBounded } from "./body.ts";

interface CacheTarget {
  instanceName: string;
  kind: "ac" | "cas";
  hash: string;
}

function parseTarget(path: string): CacheTarget {
  const segs = path.replace(/^\/cache\/?/, "").split("/");
  const hash = segs.pop() ?? "";
  const kind = segs.pop();
  if (kind !== "ac" && kind !== "cas") throw new ConnectError(`not a cache path: ${path.slice(0, 200)}`, Code.NotFound);
  return { instanceName: segs.map((s) => decodePath(s, "instance_name")).join("/"), kind, hash: parseHash(hash, "hash") };
}

/** The protocol names actions by hash alone. */
const NO_SIZE = { sizeKnown: false };

const octets = { "content-type": "application/octet-stream" };

function errorResponse(e: unknown): Response {
  const headers: Record<string, string> = {};
  if (e instanceof ConnectError && e.code === Code.Unauthenticated) headers["www-authenticate"] = 'Basic realm="kiln"';
  const res = restErrorResponse(e, headers);
  if (e instanceof ConnectError && e.code === Code.OutOfRange) return new Response(res.body, { status: 416, headers: res.headers });
  return res;
}

async function getAc(c: Context, t: CacheTarget, head: boolean): Promise<Response> {
  const ctx = contextFor(c.req.raw, ActionCache.method.getActionResult, "http-cache");
  const result = await getActionResult(
    ctx,
    create(GetActionResultRequestSchema, { instanceName: t.instanceName, actionDigest: { hash: t.hash } }),
    NO_SIZE,
  );
  const bytes = toBinary(ActionResultSchema, result);
  return new Response(head ? null : bytes, { headers: { ...octets, "content-length": String(bytes.byteLength) } });
}

async function putAc(c: Context, t: CacheTarget): Promise<Response> {
  await admitCaller(c.req.raw.headers, c.req.url); // before the body is read; updateActionResult awaits the rate verdict
  const bytes = await readBodyBounded(c.req.raw, MAX_ACTION_RESULT_BYTES, "MAX_ACTION_RESULT_BYTES");
  let actionResult;
  try {
    actionResult = fromBinary(ActionResultSchema, bytes);
  } catch {
    throw invalidArgument("the body is not a serialized build.bazel.remote.execution.v2.ActionResult");
  }
  const ctx = contextFor(c.req.raw, ActionCache.method.updateActionResult, "http-cache");
  await updateActionResult(
    ctx,
    create(UpdateActionResultRequestSchema, { instanceName: t.instanceName, actionDigest: { hash: t.hash }, actionResult }),
    NO_SIZE,
  );
  return new Response(null, { status: 200 });
}

async function getCas(c: Context, t: CacheTarget, head: boolean): Promise<Response> {
  const rangeHeader = c.req.header("range") ?? null;
  if (head) {
    const size = await blobSize(contextFor(c.req.raw, ByteStream.method.read, "http-cache"), t.instanceName, t.hash);
    if (size === null) throw new ConnectError(`blob ${t.hash} not found`, Code.NotFound);
    return new Response(null, { headers: { ...octets, "content-length": String(size), "accept-ranges": "bytes" } });
  }
  const ctx = contextFor(c.req.raw, ByteStream.method.read, "http-cache");
  if (!rangeHeader) {
    const blob = await readBlobByHash(ctx, t.instanceName, t.hash);
    return new Response(blob.body, { headers: { ...octets, "content-length": String(blob.size), "accept-ranges": "bytes" } });
  }
  const size = await blobSize(ctx, t.instanceName, t.hash);
  if (size === null) throw new ConnectError(`blob ${t.hash} not found`, Code.NotFound);
  const range = parseRange(rangeHeader, size);
  const blob = await readBlobByHash(ctx, t.instanceName, t.hash, range);
  if (!range) return new Response(blob.body, { headers: { ...octets, "content-length": String(size) } });
  return new Response(blob.body, {
    status: 206,
    headers: {
      ...octets,
      "content-length": String(blob.length),
      "content-range": `bytes ${range.offset}-${range.offset + blob.length - 1}/${size}`,
    },
  });
}

async function putCas(c: Context, t: CacheTarget): Promise<Response> {
  const declared = c.req.header("content-length");
  if (declared === undefined) throw new ConnectError("Content-Length is required for a CAS upload", Code.InvalidArgument);
  const size = parseSize(declared, "Content-Length");
  const ctx = contextFor(c.req.raw, ByteStream.method.write, "http-cache");
  await writeBlob(ctx, t.instanceName, { hash: t.hash, size }, uploadBody(c.req.raw, size));
  return new Response(null, { status: 200 });
}

/**
 * Whether a /cache/... path is the HTTP cache's (`.../ac/{hash}` or `.../cas/{hash}`). Other paths
 * under /cache belong to the blob routes of an instance named "cache" (`/cache/blobs/{hash}/{size}`,
 * `/cache/uploads/...`), which must reach them.
 */
const isCachePath = (path: string) => /\/(ac|cas)\/[^/]*$/.test(path);

export function mountHttpCache(app: Hono) {
  app.on(["GET", "HEAD", "PUT"], "/cache/*", async (c, next) => {
    const path = new URL(c.req.url).pathname;
    if (!isCachePath(path)) return next();
    try {
      const t = parseTarget(path);
      const head = c.req.method === "HEAD";
      if (c.req.method === "PUT") return await (t.kind === "ac" ? putAc(c, t) : putCas(c, t));
      return await (t.kind === "ac" ? getAc(c, t, head) : getCas(c, t, head));
    } catch (e) {
      return errorResponse(e);
    }
  });
}
