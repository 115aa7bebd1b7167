// Blobs over plain HTTP under their ByteStream resource names, for large streams from the bridge
// and the runner: GET /{instance}/blobs/{hash}/{size} and PUT /{instance}/uploads/{uuid}/blobs/{hash}/{size}.
import type { Hono } from "hono";
import { ByteStream } from "../gen/google/bytestream/bytestream_pb.ts";
import { Code, ConnectError, restErrorResponse } from "../errors.ts";
import { readBlob, writeBlob } from "../services/blobs.ts";
import { parseReadResource, parseWriteResource } from "../storage/resource-name.ts";
import { contextFor } from "./handler-context.ts";
import { parseRange } from "./http-range.ts";
import { uploadBody } from "./request-body.ts";
import { decodeForMatch, decodePath } from "./path-decode.ts";

const pathOf = (url: string) => new URL(url).pathname.replace(/^\//, "");
const resourceOf = (url: string) => decodePath(pathOf(url), "resource_name");

export function mountBlobs(app: Hono) {
  app.on(["GET", "HEAD"], "*", async (c, next) => {
    if (!/(^|\/)blobs\/[^/]+\/\d+$/.test(decodeForMatch(pathOf(c.req.url)))) return next();
    try {
      const r = parseReadResource(resourceOf(c.req.url));
      const range = parseRange(c.req.header("range") ?? null, r.digest.size);
      const blob = await readBlob(contextFor(c.req.raw, ByteStream.method.read, "http"), r.instanceName, r.digest, range);
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
        "content-length": String(blob.length),
        "accept-ranges": "bytes",
      };
      if (!range) return new Response(c.req.method === "HEAD" ? null : blob.body, { headers });
      headers["content-range"] = `bytes ${range.offset}-${range.offset + blob.length - 1}/${r.digest.size}`;
      return new Response(c.req.method === "HEAD" ? null : blob.body, { status: 206, headers });
    } catch (e) {
      if (e instanceof ConnectError && e.code === Code.OutOfRange) return new Response(null, { status: 416 });
      return restErrorResponse(e);
    }
  });

  app.put("*", async (c, next) => {
    if (!/(^|\/)uploads\/[^/]+\/blobs\//.test(decodeForMatch(pathOf(c.req.url)))) return next();
    try {
      const r = parseWriteResource(resourceOf(c.req.url));
      const ctx = contextFor(c.req.raw, ByteStream.method.write, "http");
      await writeBlob(ctx, r.instanceName, r.digest, uploadBody(c.req.raw, r.digest.size), r.uploadId);
      return c.json({ committedSize: String(r.digest.size) });
    } catch (e) {
      return restErrorResponse(e);
    }
  });
}
