// What the gRPC-web lanes (find-missing-fast-lane.ts, bytestream-read-lane.ts) share: taking only a
// plain request (binary gRPC-web, uncompressed, with a Content-Length within the router's limit, a
// valid grpc-timeout and one uncompressed envelope), the handler context the router would give it,
// and the trailer frame. A request a lane does not take goes to the Connect router with the bytes
// already read, so the router answers it, or names its fault, exactly as before.
import { createHandlerContext } from "@connectrpc/connect";
import { encodeEnvelope, type UniversalServerRequest } from "@connectrpc/connect/protocol";
import { parseTimeout, trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import type { DescMethod, DescService } from "@bufbuild/protobuf";

const PLAIN_TYPES = new Set(["application/grpc-web", "application/grpc-web+proto"]);
export const ENVELOPE_HEADER = 5;

export interface PlainRequest {
  /** The whole body: the envelope header, then `message`. */
  bytes: Uint8Array;
  message: Uint8Array;
  timeoutMs: number | undefined;
}

async function* replay(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  if (bytes.byteLength) yield bytes;
}

/**
 * The body, announced as `length` bytes; `whole` is false if it ends short, runs over or breaks
 * off (the router then answers what arrived, as it would have).
 */
async function readExactly(body: AsyncIterable<Uint8Array>, length: number): Promise<{ bytes: Uint8Array; whole: boolean }> {
  const bytes = new Uint8Array(length);
  let at = 0;
  try {
    for await (const chunk of body) {
      if (at + chunk.byteLength > length) return { bytes: new Uint8Array(await new Blob([bytes.subarray(0, at), chunk]).arrayBuffer()), whole: false };
      bytes.set(chunk, at);
      at += chunk.byteLength;
    }
  } catch {
    return { bytes: bytes.subarray(0, at), whole: false };
  }
  return at === length ? { bytes, whole: true } : { bytes: bytes.subarray(0, at), whole: false };
}

/**
 * The request's one message if it is plain; otherwise `rest`, the request as the router must see
 * it (its body replayed from the bytes read, if any were).
 */
export async function readPlainRequest(req: UniversalServerRequest, readMaxBytes: number): Promise<{ plain: PlainRequest } | { rest: UniversalServerRequest }> {
  const h = req.header;
  const length = Number(h.get("content-length") ?? NaN);
  const encoding = h.get("grpc-encoding");
  const timeout = parseTimeout(h.get("grpc-timeout"), Number.MAX_SAFE_INTEGER); // the router's default ceiling
  const plain =
    req.method === "POST" &&
    PLAIN_TYPES.has((h.get("content-type") ?? "").toLowerCase()) &&
    (encoding === null || encoding === "identity") &&
    !timeout.error &&
    length >= ENVELOPE_HEADER &&
    length <= readMaxBytes + ENVELOPE_HEADER &&
    req.body !== null &&
    typeof req.body === "object" &&
    Symbol.asyncIterator in req.body;
  if (!plain) return { rest: req };
  const { bytes, whole } = await readExactly(req.body as AsyncIterable<Uint8Array>, length);
  const declared = bytes.byteLength >= ENVELOPE_HEADER ? new DataView(bytes.buffer, bytes.byteOffset).getUint32(1) : -1;
  const message = bytes.subarray(ENVELOPE_HEADER);
  if (!whole || bytes[0] !== 0 || declared !== message.byteLength) return { rest: { ...req, body: replay(bytes) } };
  return { plain: { bytes, message, timeoutMs: timeout.timeoutMs } };
}

/** The request as the router would have it, when the lane has found its message unreadable after all. */
export function replayed(req: UniversalServerRequest, p: PlainRequest): UniversalServerRequest {
  return { ...req, body: replay(p.bytes) };
}

/** The handler context the router would create for this call (call ctx.abort() when done). */
export function laneContext(req: UniversalServerRequest, service: DescService, method: DescMethod, timeoutMs: number | undefined): ReturnType<typeof createHandlerContext> {
  return createHandlerContext({
    service,
    method,
    protocolName: "grpc-web",
    requestMethod: req.method,
    url: req.url,
    timeoutMs,
    requestSignal: req.signal,
    requestHeader: req.header,
    contextValues: req.contextValues,
  });
}

/** The last frame of a gRPC-web response body: the trailers. */
export const trailerFrame = (trailer: Headers): Uint8Array => encodeEnvelope(trailerFlag, trailerSerialize(trailer));

export const GRPC_WEB_ANSWER = { "content-type": "application/grpc-web+proto" } as const;
