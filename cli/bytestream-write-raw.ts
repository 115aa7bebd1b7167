// ByteStream.Write of a small blob served from the HTTP/2 stream itself, without connect-node.
// connect-node's server pipeline (a handler context, async iterables and interceptors per call)
// cost the bridge about as much CPU per 1 KiB Write as the client's own grpc-js call (measured:
// 0.24-0.43 ms per Write when a raw HTTP/2 server answered, 0.62-0.91 ms through connect-node),
// and on a build machine the bridge shares the cores with the build.
//
// The first message decides. A small blob from offset 0 (what writeSmall in bytestream-write.ts
// batches) is read here, whole, and goes through the same checks to the same batcher. Any other
// Write is handed to connect-node with the bytes already read put back in front of the rest, so
// it sees the request as the client sent it. A body that ends before its first message is whole,
// or whose messages this reader cannot split, is relayed to the worker as it is, which answers it.
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createHandlerContext, type Transport } from "@connectrpc/connect";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";
import { ByteStream, WriteRequestSchema, WriteResponseSchema, type WriteRequest } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { smallUploadSize, writeSmall, type SmallWrites } from "./bytestream-write.ts";
import { frameHeader, messagesOf } from "./grpc-web-frames.ts";
import { GrpcAnswer, relayCall, requestHeaders, type RelayOptions } from "./relay.ts";

const HEADER = 5;
/** A first message past this is not a small blob's (64 KiB of data, a resource name, a few fields). */
const FIRST_MESSAGE_MAX = 80 * 1024;
/** The whole body of a small blob's Write, however the client cut it into messages. */
const BODY_MAX = 256 * 1024;

/** The first message of `body`, once it is whole; undefined while it is not. */
function firstMessage(body: Buffer): Buffer | undefined {
  if (body.byteLength < HEADER) return undefined;
  const length = body.readUInt32BE(1);
  return body.byteLength >= HEADER + length ? body.subarray(HEADER, HEADER + length) : undefined;
}

function decode(message: Uint8Array): WriteRequest | undefined {
  try {
    return fromBinary(WriteRequestSchema, message);
  } catch {
    return undefined;
  }
}

/**
 * The handler for ByteStream.Write requests the relay may read (binary, uncompressed);
 * `connectNode` serves every Write this one hands over.
 */
export function rawSmallWrite(smallWrites: SmallWrites, upstream: Transport, relay: RelayOptions, connectNode: (req: Http2ServerRequest, res: Http2ServerResponse) => void) {
  return (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    const deadline = req.headers["grpc-timeout"];
    const timeout = parseTimeout(typeof deadline === "string" ? deadline : null, Number.MAX_SAFE_INTEGER);
    if (timeout.error || Array.isArray(deadline)) return connectNode(req, res);
    const chunks: Buffer[] = [];
    let length = 0;
    let small: { head: WriteRequest; size: number } | undefined;
    const stopReading = () => {
      req.off("data", onData);
      req.off("end", onEnd);
    };
    const handOver = () => {
      stopReading();
      req.pause();
      req.unshift(Buffer.concat(chunks));
      connectNode(req, res);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.byteLength;
      if (small) {
        // More than a small blob's Write could hold: what arrived goes to the checks, which refuse it.
        if (length > BODY_MAX) finish();
        return;
      }
      const sofar = chunks.length === 1 ? chunk : Buffer.concat(chunks);
      if (sofar[0] !== 0) return handOver(); // flagged compressed: connect-node names the fault
      const first = firstMessage(sofar);
      if (!first) {
        if (length > HEADER + FIRST_MESSAGE_MAX) handOver();
        return;
      }
      const head = decode(first);
      const size = head && smallUploadSize(head);
      if (!head || size === undefined) return handOver();
      small = { head, size };
    };
    const onEnd = () => finish();
    const finish = () => {
      stopReading();
      const body = Buffer.concat(chunks);
      const cutShort = length > BODY_MAX;
      // Cut short, the body ends inside a message: the whole ones are more than the blob, which the checks refuse.
      const messages = small && messagesOf(body, cutShort);
      const requests = messages?.map(decode);
      if (!small || !requests || requests.some((r) => r === undefined)) {
        if (cutShort) req.resume(); // past BODY_MAX: not worth relaying; what is left is dropped
        return cutShort
          ? new GrpcAnswer(res, req.url, relay.onError).fail(new ConnectError(`a Write of ${small?.size} bytes sent over ${BODY_MAX} bytes of messages`, Code.InvalidArgument))
          : relayCall(req, res, relay, body);
      }
      if (cutShort) req.resume(); // the rest is read and dropped; the answer does not wait for it
      void answer(req, res, relay, smallWrites, upstream, small.size, requests as WriteRequest[], timeout.timeoutMs);
    };
    req.on("data", onData);
    req.on("end", onEnd);
  };
}

async function answer(
  req: Http2ServerRequest,
  res: Http2ServerResponse,
  relay: RelayOptions,
  smallWrites: SmallWrites,
  upstream: Transport,
  size: number,
  requests: WriteRequest[],
  timeoutMs: number | undefined,
) {
  const answer = new GrpcAnswer(res, req.url, relay.onError);
  // The client cancelling (or going away) cancels the Write, as connect-node's context would.
  const cancel = new AbortController();
  answer.onClose(() => {
    if (!answer.answered) cancel.abort(new ConnectError("the client cancelled the Write", Code.Canceled));
  });
  const ctx = createHandlerContext({
    service: ByteStream,
    method: ByteStream.method.write,
    protocolName: "grpc",
    requestMethod: "POST",
    url: req.url,
    timeoutMs,
    requestSignal: cancel.signal,
    requestHeader: requestHeaders(req),
  });
  try {
    const [head, ...rest] = requests;
    const it = rest[Symbol.iterator]();
    const more: AsyncIterator<WriteRequest> = { next: async () => it.next() };
    const { committedSize } = await writeSmall(smallWrites, upstream, size, head!, more, ctx);
    const message = toBinary(WriteResponseSchema, create(WriteResponseSchema, { committedSize }));
    answer.write(Buffer.concat([frameHeader(message.byteLength), message]));
    answer.end(new Headers({ "grpc-status": "0" }));
  } catch (e) {
    answer.fail(ConnectError.from(e));
  } finally {
    ctx.abort(); // its deadline timer, if any
  }
}
