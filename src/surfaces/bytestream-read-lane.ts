// ByteStream.Read over gRPC-web without the generic codec: what Cloudflare's edge sends the worker
// for a native gRPC client in production, and what browser tools send. The pieces are the router's
// own (openRead in services/bytestream.ts: whole 1 MiB pieces of the blob read from R2, zstd
// frames, a live log's chunks), behind the same request gate; the router encodes each as a
// ReadResponse object and envelopes it (two copies of every byte), while here a blob's piece goes
// out as it is, with the few header bytes of its message (src/shared/read-framing.ts) written into
// room left in front of it. A 256 MiB read ran at 517-538 MB/s through the router and 622-724 MB/s
// here, against a plain GET's 633-814 MB/s in the same runs.
//
// Only a plain request (grpc-web-lane.ts) whose ReadRequest decodes takes the lane; everything
// else goes to the router as it came. Every message goes out whole, so an error, before the first
// byte or after the last whole message, is the trailer, as the router sends it.
import { fromBinary } from "@bufbuild/protobuf";
import type { UniversalHandlerFn, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc-web";
import { ByteStream, ReadRequestSchema, type ReadRequest } from "../gen/google/bytestream/bytestream_pb.ts";
import { admitCaller, requireCaller } from "../caller.ts";
import { requestIdOf, withRequestId } from "../request-id.ts";
import { openRead } from "../services/bytestream.ts";
import { concatBytes } from "../shared/concat-bytes.ts";
import { readResponseHead } from "../shared/read-framing.ts";
import { GRPC_WEB_ANSWER, laneContext, readPlainRequest, replayed, trailerFrame } from "./grpc-web-lane.ts";

const method = ByteStream.method.read;
export const READ_PATH = `/${ByteStream.typeName}/${method.name}`;

function decodeRead(message: Uint8Array): ReadRequest | undefined {
  try {
    return fromBinary(ReadRequestSchema, message);
  } catch {
    return undefined;
  }
}

/**
 * The frames of a read: each piece in one buffer with its message header (written into the room
 * in front of it, or copied with it), then the trailer, with the error if the source fails. Every
 * message goes out whole, so the client reads the error, never a short blob.
 */
export async function* readFrames(source: { pieces: AsyncIterable<Uint8Array>; room: number }, signal: AbortSignal, fail: (e: unknown) => Headers): AsyncGenerator<Uint8Array> {
  try {
    for await (const piece of source.pieces) {
      signal.throwIfAborted(); // the call's deadline, as the router keeps it
      const head = readResponseHead(piece.byteLength);
      if (source.room >= head.byteLength) {
        const frame = new Uint8Array(piece.buffer, piece.byteOffset - head.byteLength, head.byteLength + piece.byteLength);
        frame.set(head);
        yield frame;
      } else yield concatBytes([head, piece]);
    }
  } catch (e) {
    yield trailerFrame(fail(e));
    return;
  }
  yield trailerFrame(new Headers({ "grpc-status": "0" }));
}

/** `fallback` (the Connect router's handler for Read) answers what this lane does not take. */
export function byteStreamReadLane(fallback: UniversalHandlerFn, readMaxBytes: number): UniversalHandlerFn {
  return async (req: UniversalServerRequest) => {
    // The router's gate, before the body is read (a stranger cannot make the worker read it);
    // the rate verdict is awaited below, once the request is in.
    try {
      await admitCaller(req.header, req.url);
    } catch {
      return fallback(req); // whose gate refuses the caller, as it would have without this lane
    }
    const read = await readPlainRequest(req, readMaxBytes);
    if ("rest" in read) return fallback(read.rest);
    const request = decodeRead(read.plain.message);
    if (!request) return fallback(replayed(req, read.plain));

    const ctx = laneContext(req, ByteStream, method, read.plain.timeoutMs);
    const fail = (e: unknown) => setTrailerStatus(new Headers(), withRequestId(e, requestIdOf(req.header)));
    let body: AsyncIterable<Uint8Array>;
    try {
      await requireCaller(req.header, req.url); // the rate verdict, as the router's interceptor awaits it
      body = readFrames(await openRead(ctx, request), ctx.signal, fail);
    } catch (e) {
      body = (async function* () {
        yield trailerFrame(fail(e));
      })();
    }
    return {
      status: 200,
      header: new Headers(GRPC_WEB_ANSWER),
      body: (async function* () {
        try {
          yield* body;
        } finally {
          ctx.abort(); // its deadline timer, if any
        }
      })(),
    };
  };
}
