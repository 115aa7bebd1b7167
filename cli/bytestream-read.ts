// ByteStream.Read as a streamed HTTP GET of the blob, with the ReadResponse framing written around
// the bytes here (src/shared/read-framing.ts: a few header bytes per message, nothing copied or
// encoded). The worker's gRPC-web Read lane frames its messages the same way; a GET leaves the
// bridge no trailer frame to find and passes the blob's bytes on as they arrive. A read of 1 MiB
// or more takes them straight off the socket (fixed-length-get.ts), without node:http's copy. A
// name or offset we do not handle here (compressed-blobs, an offset at or past the end, a request
// we cannot decode, ...) is relayed to the worker as gRPC-web, bytes as they are.
import type { Readable } from "node:stream";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ReadRequestSchema, type ReadRequest } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { parseReadResource, resourcePath } from "../src/shared/resource-names.ts";
import { errorOfAnswer } from "./errors.ts";
import { fixedLengthGet, recycle } from "./fixed-length-get.ts";
import { messagesOf } from "./grpc-web-frames.ts";
import { ReadFramer } from "../src/shared/read-framing.ts";
import { GrpcAnswer, relayCall, upstreamHeaders, workerRequest, type RelayOptions } from "./relay.ts";

/** The blob size of `{instance}/blobs/{hash}/{size}`; undefined: let the worker judge the name. */
export function blobSize(resourceName: string): number | undefined {
  try {
    const r = parseReadResource(resourceName);
    return r.compressor ? undefined : r.digest.size;
  } catch {
    return undefined;
  }
}

/**
 * What the GET asks for: its Range header ("" for the whole blob) and how many bytes that is;
 * undefined: let the worker answer.
 */
function spanOf(req: ReadRequest, size: number): { range: string; bytes: number } | undefined {
  const { readOffset: offset, readLimit: limit } = req;
  if (offset < 0n || limit < 0n) return undefined;
  if (offset === 0n && limit === 0n) return { range: "", bytes: size };
  if (offset >= BigInt(size)) return undefined; // empty or OUT_OF_RANGE: the worker's call
  const whole = limit === 0n || offset + limit >= BigInt(size);
  const end = whole ? BigInt(size) : offset + limit;
  return { range: `bytes=${offset}-${whole ? "" : String(end - 1n)}`, bytes: Number(end - offset) };
}

/**
 * Reads of at least this many bytes take their body straight off the socket (fixed-length-get.ts);
 * smaller ones use node:http and its pooled connections, where a new connection per read would
 * cost more than the copy it saves.
 */
const SOCKET_READ_MIN_BYTES = 1024 * 1024;

/** A Read request is a few hundred bytes; a body past this is not one we look into. */
const MAX_REQUEST_BYTES = 64 * 1024;

export function byteStreamRead(opts: RelayOptions) {
  return (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    const parts: Buffer[] = [];
    let length = 0;
    req.on("data", (c: Buffer) => {
      length += c.byteLength;
      if (length <= MAX_REQUEST_BYTES) parts.push(c);
    });
    req.on("end", () => {
      const body = Buffer.concat(parts);
      const read = length <= MAX_REQUEST_BYTES ? decodeRead(body) : undefined;
      const size = read && blobSize(read.resourceName);
      const span = read && size !== undefined ? spanOf(read, size) : undefined;
      if (!read || !span) {
        if (length > MAX_REQUEST_BYTES) return new GrpcAnswer(res, req.url, opts.onError).fail(new ConnectError("a ReadRequest over 64 KiB", Code.ResourceExhausted));
        return relayCall(req, res, opts, body);
      }
      streamBlob(req, res, opts, read.resourceName, span);
    });
  };
}

/** The one ReadRequest of a request body, or undefined (compressed, several, not a ReadRequest). */
function decodeRead(body: Buffer): ReadRequest | undefined {
  const messages = messagesOf(body);
  if (messages?.length !== 1) return undefined;
  try {
    return fromBinary(ReadRequestSchema, messages[0]!);
  } catch {
    return undefined;
  }
}

function streamBlob(req: Http2ServerRequest, res: Http2ServerResponse, opts: RelayOptions, resourceName: string, { range, bytes }: { range: string; bytes: number }) {
  const answer = new GrpcAnswer(res, req.url, opts.onError);
  const headers = upstreamHeaders(req, opts.key);
  delete headers["content-type"];
  delete headers["x-grpc-web"];
  delete headers["grpc-timeout"];
  if (range) headers.range = range;
  const path = `/${resourcePath(resourceName)}`;
  const unavailable = (what: string) => (e: unknown) => {
    if (answer.finished) return;
    answer.fail(new ConnectError(`${what}: ${e instanceof Error ? e.message : String(e)}`, Code.Unavailable));
  };
  const origin = new URL(opts.base);
  if (origin.protocol !== "http:" || bytes < SOCKET_READ_MIN_BYTES) return viaNodeHttp();
  fixedLengthGet(origin, `${origin.pathname.replace(/\/$/, "")}${path}`, headers).then((got) => {
    if (!got) return viaNodeHttp();
    if (answer.finished) return void got.body.destroy();
    answer.onClose(() => got.body.destroy());
    got.body.on("error", unavailable("the worker's response broke off"));
    relayBody(got.body, got.length, bytes, answer);
  }, unavailable("GET from the worker failed"));

  function viaNodeHttp() {
    const get = workerRequest(opts, path, { headers });
    let upstreamEnded = false;
    answer.onClose(() => {
      if (!upstreamEnded) get.destroy();
    });
    get.on("error", unavailable("GET from the worker failed"));
    get.on("response", (up) => {
      up.on("error", unavailable("the worker's response broke off"));
      up.on("aborted", () => unavailable("the worker's response broke off")("aborted"));
      up.on("end", () => (upstreamEnded = true));
      if (up.statusCode !== 200 && up.statusCode !== 206) {
        const text: Buffer[] = [];
        up.on("data", (c: Buffer) => text.push(c));
        up.on("end", () => void errorOfAnswer(up.statusCode, Buffer.concat(text)).then((e) => answer.fail(e)));
        return;
      }
      const length = Number(up.headers["content-length"]);
      relayBody(up, Number.isSafeInteger(length) ? length : undefined, bytes, answer);
    });
    get.end();
  }
}

/**
 * Sends a blob's bytes as ReadResponses as they arrive, pausing the body while the client is
 * behind. The body must be exactly the `expected` bytes the read asked for: a worker that declares
 * or sends another length (a range it ignored, a body cut short) is not passed on as a whole read.
 */
function relayBody(body: Readable, declared: number | undefined, expected: number, answer: GrpcAnswer) {
  if (declared !== undefined && declared !== expected) {
    body.destroy();
    return answer.fail(new ConnectError(`the worker answered ${declared} bytes where the read asked for ${expected}`, Code.Unavailable));
  }
  const framer = new ReadFramer(expected);
  let received = 0;
  body.on("data", (chunk: Buffer) => {
    received += chunk.byteLength;
    if (received > expected) {
      body.destroy();
      return answer.fail(new ConnectError(`the worker sent more than the ${expected} bytes asked for`, Code.Unavailable));
    }
    // The chunk's memory may be read into again (fixed-length-get.ts) once every part of it was
    // sent; a part that failed may still be referenced by a socket write, so then it is not.
    const parts = framer.push(chunk);
    let unsent = parts.length;
    let failed = false;
    const sent = (err?: Error | null) => {
      failed ||= !!err;
      if (--unsent === 0 && !failed) recycle(chunk);
    };
    let more = true;
    for (const part of parts) more = answer.write(part as Buffer, sent) && more;
    if (!more) {
      body.pause();
      answer.onDrain(() => body.resume());
    }
  });
  body.on("end", () => {
    if (received < expected) answer.fail(new ConnectError(`the worker's response ended ${expected - received} bytes short`, Code.Unavailable));
    else answer.end(new Headers({ "grpc-status": "0" }));
  });
}
