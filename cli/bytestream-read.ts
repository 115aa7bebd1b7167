// ByteStream.Read as a streamed HTTP GET of the blob: the worker serves raw bytes faster than it
// frames them as gRPC-web messages, and the bridge then skips decoding them. A name or offset we
// do not handle here (compressed-blobs, an offset at or past the end, ...) is relayed as gRPC-web.
// A whole blob over the chunking threshold is read as its SplitBlob chunks (chunked-blobs.ts).
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type Transport } from "@connectrpc/connect";
import { ByteStream, type ReadRequest, type ReadResponseSchema } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { parseReadResource, resourcePath } from "../src/shared/resource-names.ts";
import { readChunked, type ChunkPolicy } from "./chunked-blobs.ts";
import { fromHttpError } from "./errors.ts";
import { forwardServerStream } from "./forward.ts";
import { forwardedMetadata } from "./metadata.ts";

/** The blob size of `{instance}/blobs/{hash}/{size}`; undefined: let the worker judge the name. */
export function blobSize(resourceName: string): number | undefined {
  try {
    const r = parseReadResource(resourceName);
    return r.compressor ? undefined : r.digest.size;
  } catch {
    return undefined;
  }
}

/** The Range header for a read, "" for the whole blob; undefined: let the worker answer. */
function rangeOf(req: ReadRequest, size: number): string | undefined {
  const { readOffset: offset, readLimit: limit } = req;
  if (offset < 0n || limit < 0n) return undefined;
  if (offset === 0n && limit === 0n) return "";
  if (offset >= BigInt(size)) return undefined; // empty or OUT_OF_RANGE: the worker's call
  const end = limit === 0n || offset + limit >= BigInt(size) ? "" : String(offset + limit - 1n);
  return `bytes=${offset}-${end}`;
}

export function byteStreamRead(upstreamUrl: string, upstream: Transport, chunking?: ChunkPolicy) {
  const base = upstreamUrl.replace(/\/+$/, "");
  return async function* (req: ReadRequest, ctx: HandlerContext): AsyncGenerator<MessageInitShape<typeof ReadResponseSchema>> {
    const size = blobSize(req.resourceName);
    const range = size === undefined ? undefined : rangeOf(req, size);
    if (range === undefined) {
      yield* forwardServerStream(upstream, ByteStream.method.read, req, ctx);
      return;
    }
    if (range === "" && chunking) {
      const { instanceName, digest } = parseReadResource(req.resourceName);
      const plan = await chunking(ctx, instanceName);
      if (plan && digest.size > plan.above) {
        for await (const data of readChunked(upstream, base, instanceName, digest, ctx)) yield { data };
        return;
      }
    }
    const headers = forwardedMetadata(ctx.requestHeader);
    if (range) headers.set("range", range);
    const url = `${base}/${resourcePath(req.resourceName)}`;
    let res: Response;
    try {
      res = await fetch(url, { headers, signal: ctx.signal });
    } catch (e) {
      throw unavailable("GET from the worker failed", e, ctx);
    }
    if (!res.ok) throw await fromHttpError(res);
    if (!res.body) return;
    try {
      for await (const data of res.body) yield { data };
    } catch (e) {
      throw unavailable("the worker's response broke off", e, ctx);
    }
  };
}

function unavailable(what: string, e: unknown, ctx: HandlerContext): ConnectError {
  if (ctx.signal.aborted) return ConnectError.from(ctx.signal.reason ?? "the client cancelled", Code.Canceled);
  const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : String(e);
  return new ConnectError(`${what}: ${cause}`, Code.Unavailable, undefined, undefined, e);
}
