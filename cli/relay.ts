// A native gRPC call relayed to the worker as gRPC-web, as bytes: the request body goes upstream
// as it came (gRPC and gRPC-web frame messages alike), the response's message frames come back as
// they are, and only the gRPC-web trailer frame is turned into HTTP/2 trailers. Nothing is
// decoded or encoded on the way, which is most of what the bridge cost per call when it relayed
// message by message (FindMissingBlobs of 10,000 digests decoded and encoded twice each way).
import http from "node:http";
import https from "node:https";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeFromHttpStatus, findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { errorOfAnswer, specGrpcMessage } from "./errors.ts";
import { forwardedMetadata } from "./metadata.ts";
import { TrailerSplitter } from "./grpc-web-frames.ts";

export interface RelayOptions {
  /** The worker's origin, without a trailing slash: http, or https for a deployed worker. */
  base: string;
  /** Keep-alive connections to it (an https.Agent for an https origin: see workerAgent). */
  agent: http.Agent;
  /** A key for calls that carry no authorization (see BridgeOptions.besApiKey). */
  key?: string;
  /** Called once per call that ends with an error status. */
  onError?: (path: string, err: ConnectError) => void;
}

/** Pooled connections to the worker at `base`, over TLS when it is an https origin. */
export function workerAgent(base: string): http.Agent {
  return base.startsWith("https:") ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
}

/** A request to the worker (`path` under opts.base) over http or https, as its origin says. */
export function workerRequest(opts: RelayOptions, path: string, options: http.RequestOptions): http.ClientRequest {
  const url = `${opts.base}${path}`;
  return (url.startsWith("https:") ? https.request : http.request)(url, { ...options, agent: opts.agent });
}

/** The request is plain gRPC in protobuf, uncompressed: what the relay passes on as bytes. */
export function relayable(req: Http2ServerRequest): boolean {
  const type = req.headers["content-type"] ?? "";
  const encoding = req.headers["grpc-encoding"];
  return req.method === "POST" && /^application\/grpc(\+proto)?(;|$)/i.test(type) && (encoding === undefined || encoding === "identity");
}

/** An HTTP/2 request's headers (pseudo-headers left out) as a fetch Headers. */
export function requestHeaders(req: Http2ServerRequest): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.startsWith(":") || v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) h.append(k, one);
  }
  return h;
}

/** The headers of the upstream gRPC-web request: the call's metadata and deadline, nothing of its transport. */
export function upstreamHeaders(req: Http2ServerRequest, key?: string): Record<string, string> {
  const out: Record<string, string> = {};
  const incoming = requestHeaders(req);
  // gRPC asks for unpadded base64 in -bin values and accepts both; pass them on as asked.
  forwardedMetadata(incoming).forEach((v, k) => (out[k] = k.endsWith("-bin") ? v.replace(/=+$/, "") : v));
  if (key && !out.authorization) out.authorization = `Bearer ${key}`;
  const timeout = req.headers["grpc-timeout"];
  if (typeof timeout === "string" && /^\d{1,8}[HMSmun]$/.test(timeout)) out["grpc-timeout"] = timeout;
  out["content-type"] = "application/grpc-web+proto";
  out["x-grpc-web"] = "1";
  return out;
}

/**
 * An answer to a gRPC call, written once: headers, message frames, then trailers. The client may
 * cancel (or hang up) at any moment, before anything was sent too: from then on nothing is written,
 * since writing to a closed HTTP/2 stream throws, and one call must never take the bridge down.
 */
export class GrpcAnswer {
  private ended = false;
  private closed = false;

  constructor(
    private readonly res: Http2ServerResponse,
    private readonly path: string,
    private readonly onError?: (path: string, err: ConnectError) => void,
  ) {
    res.once("close", () => (this.closed = true));
  }

  /** Nothing more can be sent: the call was answered, or its stream closed. */
  get finished(): boolean {
    return this.ended || this.closed || this.res.stream.destroyed || this.res.stream.closed;
  }

  /** The call was answered (not merely closed by the client). */
  get answered(): boolean {
    return this.ended;
  }

  /**
   * Writes message-frame bytes; false: wait for "drain" before writing more. An HTTP/2 stream
   * asks for a pause past 16 KiB buffered, which would stop and start the upstream socket for
   * every chunk it delivers; a little more buffer keeps the bytes flowing. `sent` runs once the
   * bytes went out (or failed to); not at all when they were dropped.
   */
  write(bytes: Buffer, sent?: (err?: Error | null) => void): boolean {
    if (this.finished) return true; // dropped: whoever feeds us stops on close
    this.start();
    this.res.write(bytes, sent);
    return this.res.stream.writableLength < WRITE_BUFFER_BYTES;
  }

  onDrain(fn: () => void) {
    this.res.once("drain", fn);
  }

  onClose(fn: () => void) {
    this.res.once("close", fn);
  }

  /** Ends the call with these trailers (grpc-status and the rest), trailers-only if nothing was sent. */
  end(trailers: Headers) {
    if (this.finished) return;
    this.ended = true;
    const err = findTrailerError(trailers);
    if (err) this.onError?.(this.path, err);
    const fields: Record<string, string> = {};
    trailers.forEach((v, k) => {
      if (!HOP_BY_HOP.has(k)) fields[k] = v;
    });
    if (!fields["grpc-status"]) fields["grpc-status"] = "0";
    if (fields["grpc-message"]) fields["grpc-message"] = specGrpcMessage(fields["grpc-message"]);
    try {
      if (!this.res.headersSent) {
        // Trailers-only: one HEADERS frame that ends the stream, which is how gRPC clients read it.
        this.res.stream.respond({ ":status": 200, "content-type": "application/grpc", ...fields }, { endStream: true });
        return;
      }
      this.res.addTrailers(fields);
      this.res.end();
    } catch {
      // The stream closed under us (the client's RST_STREAM arrives on its own schedule): nobody to tell.
    }
  }

  fail(err: ConnectError) {
    this.end(setTrailerStatus(new Headers(), err));
  }

  private start() {
    if (!this.res.headersSent) this.res.writeHead(200, { "content-type": "application/grpc" });
  }
}

const WRITE_BUFFER_BYTES = 1024 * 1024;

/** Of an error answer's body, what is read for its message: the worker's are a few hundred bytes. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

// Never valid in HTTP/2 (a worker's trailers could in principle carry them).
const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "content-length"]);

/**
 * Relays one call. `body`: the request body, when the caller has already read it (ByteStream.Read
 * looks at its request first); otherwise the client's body is streamed upstream as it comes.
 */
export function relayCall(req: Http2ServerRequest, res: Http2ServerResponse, opts: RelayOptions, body?: Buffer): void {
  const path = req.url;
  const answer = new GrpcAnswer(res, path, opts.onError);
  const headers = upstreamHeaders(req, opts.key);
  if (body) headers["content-length"] = String(body.byteLength);
  const up = workerRequest(opts, path, { method: "POST", headers });
  let upstreamEnded = false;
  // The client went away (cancelled, deadline, connection lost): so does the upstream request.
  answer.onClose(() => {
    if (!upstreamEnded) up.destroy();
  });
  const broken = (what: string) => (e: unknown) => {
    if (answer.finished) return;
    const cause = e instanceof Error ? e.message : String(e);
    answer.fail(new ConnectError(`${what} (${cause}); retry`, Code.Unavailable));
  };
  up.on("error", broken("the connection to the worker broke"));
  up.on("response", (upRes) => {
    upRes.on("end", () => void (upstreamEnded = true));
    upRes.on("error", broken("the worker's response broke off"));
    upRes.on("aborted", () => broken("the worker's response broke off")("aborted"));
    if (upRes.statusCode !== 200) {
      // The worker's own error (JSON with its status, message and details) is passed on whole;
      // anything else (a proxy's page) is mapped by its HTTP status, as gRPC maps them.
      const text: Buffer[] = [];
      let kept = 0;
      upRes.on("data", (c: Buffer) => {
        if (kept < MAX_ERROR_BODY_BYTES) text.push(c), (kept += c.byteLength);
      });
      upRes.on("end", () => {
        const status = upRes.statusCode;
        void errorOfAnswer(status, Buffer.concat(text).subarray(0, MAX_ERROR_BODY_BYTES), codeFromHttpStatus).then((e) => answer.fail(e));
      });
      return;
    }
    if (upRes.headers["grpc-status"] !== undefined) {
      upRes.resume();
      answer.end(trailersOnly(upRes.headers));
      return;
    }
    const split = new TrailerSplitter();
    upRes.on("data", (chunk: Buffer) => {
      let parts: Buffer[];
      try {
        parts = split.push(chunk);
      } catch (e) {
        upRes.destroy();
        return answer.fail(new ConnectError(`the worker's response is not gRPC-web: ${(e as Error).message}`, Code.Internal));
      }
      let more = true;
      for (const p of parts) more = answer.write(p) && more;
      if (!more) {
        upRes.pause();
        answer.onDrain(() => upRes.resume());
      }
    });
    upRes.on("end", () => {
      const trailers = split.trailers;
      if (trailers && !split.cutShort) answer.end(trailers);
      else broken("the worker's response ended without a status")("no gRPC-web trailers");
    });
  });
  if (body) up.end(body);
  else {
    req.pipe(up);
    req.on("aborted", () => up.destroy());
  }
}

/** The largest request a single-message call may send: above every limit the worker sets (ResultStore's 30 MiB of JSON). */
export const MAX_SINGLE_REQUEST_BYTES = 32 * 1024 * 1024;

/**
 * Relays a call whose client sends one message (unary and server-streaming): read it whole, then
 * send it upstream in one write with its Content-Length. Streamed as it came, the worker reads a
 * FindMissingBlobs of 10,000 digests (700 KB) in a hundred small reads, each a turn of JavaScript.
 */
export function relaySingleMessage(req: Http2ServerRequest, res: Http2ServerResponse, opts: RelayOptions): void {
  const parts: Buffer[] = [];
  let length = 0;
  const onData = (c: Buffer) => {
    length += c.byteLength;
    if (length <= MAX_SINGLE_REQUEST_BYTES) return void parts.push(c);
    req.off("data", onData);
    req.resume(); // read and drop the rest, so the refusal reaches a client that is still sending
    parts.length = 0;
    new GrpcAnswer(res, req.url, opts.onError).fail(new ConnectError(`a request message over ${MAX_SINGLE_REQUEST_BYTES} bytes`, Code.ResourceExhausted));
  };
  req.on("data", onData);
  req.on("end", () => {
    if (length <= MAX_SINGLE_REQUEST_BYTES) relayCall(req, res, opts, Buffer.concat(parts, length));
  });
}

/** The status of a trailers-only gRPC-web response, which the worker sends in its HTTP headers. */
function trailersOnly(h: http.IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const k of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) {
    const v = h[k];
    if (typeof v === "string") out.set(k, v);
  }
  return out;
}
