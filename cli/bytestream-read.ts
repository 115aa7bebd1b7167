// ByteStream.Read as a streamed HTTP GET of the blob: the worker serves raw bytes faster than it
// frames them as gRPC-web messages, and the bridge writes the ReadResponse framing around the
// bytes itself (a few header bytes per message: nothing is copied or encoded). A name or offset we
// do not handle here (compressed-blobs, an offset at or past the end, a request we cannot
// decode, ...) is relayed to the worker as gRPC-web, bytes as they are.
import http from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ReadRequestSchema, type ReadRequest } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { parseReadResource, resourcePath } from "../src/shared/resource-names.ts";
import { fromHttpError } from "./errors.ts";
import { frameHeader, messagesOf } from "./grpc-web-frames.ts";
import { GrpcAnswer, relayCall, upstreamHeaders, type RelayOptions } from "./relay.ts";

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

/** A Read request is a few hundred bytes; a body past this is not one we look into. */
const MAX_REQUEST_BYTES = 64 * 1024;

/** ReadResponse.data is field 10, length-delimited. */
const DATA_TAG = (10 << 3) | 2;

/** The frame header and ReadResponse prefix of a message carrying `n` bytes of data. */
export function readResponseHead(n: number): Buffer {
  const varint: number[] = [];
  for (let v = n; ; v = Math.floor(v / 128)) {
    if (v < 128) {
      varint.push(v);
      break;
    }
    varint.push((v % 128) | 128);
  }
  return Buffer.concat([frameHeader(1 + varint.length + n), Buffer.from([DATA_TAG, ...varint])]);
}

/**
 * ReadResponse messages of up to this many bytes. With the body's length known, a message's
 * header goes out first and the body's chunks follow as they arrive, however the socket cuts
 * them, and nothing is copied. Measured here with grpc-js, 16 KiB to 3 MiB messages read at
 * about the same speed; this size keeps a client's per-message work small and stays well under
 * 4 MiB, the usual limit on a message a client accepts.
 */
export const READ_MESSAGE_BYTES = 1024 * 1024;

/** Turns a blob's bytes into ReadResponse frames, without copying them. */
export class ReadFramer {
  /** Bytes the current message header announced that have not arrived yet. */
  owed = 0;

  /** `length`: the bytes to come, if known; otherwise each chunk is one message. */
  constructor(private remaining: number | undefined) {}

  push(chunk: Buffer): Buffer[] {
    if (this.remaining === undefined) return chunk.byteLength ? [readResponseHead(chunk.byteLength), chunk] : [];
    const out: Buffer[] = [];
    for (let at = 0; at < chunk.byteLength; ) {
      if (this.owed === 0) {
        // Bytes past the announced length (node:http never delivers them): a message of their own.
        const n = this.remaining > 0 ? Math.min(READ_MESSAGE_BYTES, this.remaining) : chunk.byteLength - at;
        this.remaining = Math.max(0, this.remaining - n);
        this.owed = n;
        out.push(readResponseHead(n));
      }
      const take = Math.min(this.owed, chunk.byteLength - at);
      out.push(chunk.subarray(at, at + take));
      this.owed -= take;
      at += take;
    }
    return out;
  }
}

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
      const range = read && size !== undefined ? rangeOf(read, size) : undefined;
      if (!read || range === undefined) {
        if (length > MAX_REQUEST_BYTES) return new GrpcAnswer(res, req.url, opts.onError).fail(new ConnectError("a ReadRequest over 64 KiB", Code.ResourceExhausted));
        return relayCall(req, res, opts, body);
      }
      streamBlob(req, res, opts, read.resourceName, range);
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

function streamBlob(req: Http2ServerRequest, res: Http2ServerResponse, opts: RelayOptions, resourceName: string, range: string) {
  const answer = new GrpcAnswer(res, req.url, opts.onError);
  const headers = upstreamHeaders(req, opts.key);
  delete headers["content-type"];
  delete headers["x-grpc-web"];
  delete headers["grpc-timeout"];
  if (range) headers.range = range;
  const get = http.request(`${opts.base}/${resourcePath(resourceName)}`, { agent: opts.agent, headers });
  let upstreamEnded = false;
  answer.onClose(() => {
    if (!upstreamEnded) get.destroy();
  });
  const unavailable = (what: string) => (e: unknown) => {
    if (answer.finished) return;
    answer.fail(new ConnectError(`${what}: ${e instanceof Error ? e.message : String(e)}`, Code.Unavailable));
  };
  get.on("error", unavailable("GET from the worker failed"));
  get.on("response", (up) => {
    up.on("error", unavailable("the worker's response broke off"));
    up.on("aborted", () => unavailable("the worker's response broke off")("aborted"));
    if (up.statusCode !== 200 && up.statusCode !== 206) {
      const text: Buffer[] = [];
      up.on("data", (c: Buffer) => text.push(c));
      up.on("end", () => {
        upstreamEnded = true;
        void fromHttpError(new Response(Buffer.concat(text), { status: up.statusCode })).then((e) => answer.fail(e));
      });
      return;
    }
    const length = Number(up.headers["content-length"]);
    const framer = new ReadFramer(Number.isSafeInteger(length) ? length : undefined);
    up.on("data", (chunk: Buffer) => {
      let more = true;
      for (const part of framer.push(chunk)) more = answer.write(part) && more;
      if (!more) {
        up.pause();
        answer.onDrain(() => up.resume());
      }
    });
    up.on("end", () => {
      upstreamEnded = true;
      if (framer.owed > 0) answer.fail(new ConnectError(`the worker's response ended ${framer.owed} bytes short`, Code.Unavailable));
      else answer.end(new Headers({ "grpc-status": "0" }));
    });
  });
  get.end();
}
