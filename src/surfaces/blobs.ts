// Blobs over plain HTTP under their ByteStream resource names, for large streams from the bridge
// and the runner: GET /{instance}/blobs/{hash}/{size} and PUT /{instance}/uploads/{uuid}/blobs/{hash}/{size}.
// zstd: the compressed-blobs/zstd/... names carry zstd bytes both ways (as on ByteStream); on the
// plain names a PUT may say `Content-Encoding: zstd`, and a GET that sends `Accept-Encoding: zstd`
// (and no Range) is answered compressed with `Content-Encoding: zstd`.
import type { Hono } from "hono";
import { ByteStream } from "../gen/google/bytestream/bytestream_pb.ts";
import { Code, ConnectError, invalidArgument, restErrorResponse } from "../errors.ts";
import { readBlob, writeBlob } from "../services/blobs.ts";
import { parseReadResource, parseWriteResource } from "../storage/resource-name.ts";
import { contextFor } from "./handler-context.ts";
import { parseRange } from "./http-range.ts";
import { requestBody, uploadBody } from "./request-body.ts";
import { decodeForMatch, decodePath } from "./path-decode.ts";
import { compressBody, decompressBody } from "../services/compression.ts";

const pathOf = (url: string) => new URL(url).pathname.replace(/^\//, "");
const resourceOf = (url: string) => decodePath(pathOf(url), "resource_name");

export function mountBlobs(app: Hono) {
  app.on(["GET", "HEAD"], "*", async (c, next) => {
    if (!/(^|\/)(blobs|compressed-blobs\/[^/]+)\/[^/]+\/\d+$/.test(decodeForMatch(pathOf(c.req.url)))) return next();
    try {
      const r = parseReadResource(resourceOf(c.req.url));
      const head = c.req.method === "HEAD";
      // Compressed bytes have no useful ranges: a compressed read is always the whole blob.
      if (r.compressor || (acceptsZstd(c.req.header("accept-encoding")) && !c.req.header("range"))) {
        const blob = await readBlob(contextFor(c.req.raw, ByteStream.method.read, "http"), r.instanceName, r.digest);
        const headers: Record<string, string> = r.compressor
          ? { "content-type": "application/zstd" }
          : { "content-type": "application/octet-stream", "content-encoding": "zstd", vary: "accept-encoding" };
        if (head) await blob.body.cancel();
        // "manual": the body is already encoded; the runtime must not encode it again.
        return new Response(head ? null : compressBody(blob.body, blob.length), { headers, encodeBody: "manual" });
      }
      const range = parseRange(c.req.header("range") ?? null, r.digest.size);
      const blob = await readBlob(contextFor(c.req.raw, ByteStream.method.read, "http"), r.instanceName, r.digest, range);
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
        "content-length": String(blob.length),
        "accept-ranges": "bytes",
      };
      if (!range) return new Response(head ? null : blob.body, { headers });
      headers["content-range"] = `bytes ${range.offset}-${range.offset + blob.length - 1}/${r.digest.size}`;
      return new Response(head ? null : blob.body, { status: 206, headers });
    } catch (e) {
      if (e instanceof ConnectError && e.code === Code.OutOfRange) return new Response(null, { status: 416 });
      return restErrorResponse(e);
    }
  });

  app.put("*", async (c, next) => {
    if (!/(^|\/)uploads\/[^/]+\/(blobs|compressed-blobs\/[^/]+)\//.test(decodeForMatch(pathOf(c.req.url)))) return next();
    try {
      const r = parseWriteResource(resourceOf(c.req.url));
      const ctx = contextFor(c.req.raw, ByteStream.method.write, "http");
      const body = r.compressor || sentZstd(c.req.header("content-encoding"))
        ? { stream: decompressBody(requestBody(c.req.raw), r.digest.size), sized: false, compressed: true }
        : uploadBody(c.req.raw, r.digest.size);
      await writeBlob(ctx, r.instanceName, r.digest, body, r.uploadId);
      return c.json({ committedSize: String(r.digest.size) });
    } catch (e) {
      return restErrorResponse(e);
    }
  });
}

/** Whether Accept-Encoding lists zstd (with a q-value above 0). */
function acceptsZstd(header: string | undefined): boolean {
  return (header ?? "").split(",").some((part) => {
    const [coding, ...params] = part.trim().toLowerCase().split(";");
    const q = params.map((p) => /^\s*q=([\d.]+)\s*$/.exec(p)?.[1]).find((v) => v !== undefined);
    return coding === "zstd" && (q === undefined || Number(q) > 0);
  });
}

/** true for `Content-Encoding: zstd`, false for none or identity; any other coding is refused. */
function sentZstd(header: string | undefined): boolean {
  const coding = (header ?? "").trim().toLowerCase();
  if (coding === "" || coding === "identity") return false;
  if (coding === "zstd") return true;
  throw invalidArgument(`Content-Encoding "${coding.slice(0, 40)}" is not supported (zstd or identity)`);
}
