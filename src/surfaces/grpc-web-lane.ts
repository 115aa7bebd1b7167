// What the gRPC-web lanes (find-missing-fast-lane.ts, bytestream-read-lane.ts) share: taking only a
// plain request (binary gRPC-web, uncompressed, a body within the router's limit, a valid
// grpc-timeout and one uncompressed envelope), the handler context the router would give it, and
// the trailer frame. A request a lane does not take goes to the Connect router with the bytes
// already read put back in front of the rest, so the router answers it, or names its fault,
// exactly as before.
import { createHandlerContext } from "@connectrpc/connect";
import { encodeEnvelope, type UniversalServerRequest } from "@connectrpc/connect/protocol";
import { parseTimeout, trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { concatBytes } from "../shared/concat-bytes.ts";

const PLAIN_TYPES = new Set(["application/grpc-web", "application/grpc-web+proto"]);
export const ENVELOPE_HEADER = 5;

export interface PlainRequest {
  /** The whole body: the envelope header, then `message`. */
  bytes: Uint8Array;
  message: Uint8Array;
  timeoutMs: number | undefined;
}

/** The body as the router must see it: the bytes already read, then whatever the client still sends. */
async function* replay(bytes: Uint8Array, rest?: AsyncIterator<Uint8Array>): AsyncIterable<Uint8Array> {
  if (bytes.byteLength) yield bytes;
  if (rest) for (let n = await rest.next(); !n.done; n = await rest.next()) yield n.value;
}

/**
 * The body, up to `limit` bytes: `whole` if it ended within them (and, with a Content-Length,
 * exactly there). Otherwise `rest` is where reading stopped, for the router to carry on from;
 * a body that broke off is not whole, and the router answers what arrived.
 */
async function readUpTo(body: AsyncIterable<Uint8Array>, limit: number, length: number | undefined) {
  const parts: Uint8Array[] = [];
  let total = 0;
  const it = body[Symbol.asyncIterator]();
  const bytes = () => (parts.length === 1 ? parts[0]! : concatBytes(parts, total));
  try {
    for (let n = await it.next(); !n.done; n = await it.next()) {
      parts.push(n.value);
      total += n.value.byteLength;
      if (total > limit) return { bytes: bytes(), whole: false, rest: it };
    }
  } catch {
    return { bytes: bytes(), whole: false };
  }
  return { bytes: bytes(), whole: length === undefined || total === length };
}

/**
 * The request's one message if it is plain; otherwise `rest`, the request as the router must see
 * it (its body replayed from the bytes read, if any were). A body without a Content-Length (what
 * connect-node and streaming clients send) is read up to the router's limit.
 */
export async function readPlainRequest(req: UniversalServerRequest, readMaxBytes: number): Promise<{ plain: PlainRequest } | { rest: UniversalServerRequest }> {
  const h = req.header;
  const declaredLength = h.get("content-length");
  const length = declaredLength === null ? undefined : Number(declaredLength);
  const encoding = h.get("grpc-encoding");
  const timeout = parseTimeout(h.get("grpc-timeout"), Number.MAX_SAFE_INTEGER); // the router's default ceiling
  const plain =
    req.method === "POST" &&
    PLAIN_TYPES.has((h.get("content-type") ?? "").toLowerCase()) &&
    (encoding === null || encoding === "identity") &&
    !timeout.error &&
    (length === undefined || (length >= ENVELOPE_HEADER && length <= readMaxBytes + ENVELOPE_HEADER)) &&
    req.body !== null &&
    typeof req.body === "object" &&
    Symbol.asyncIterator in req.body;
  if (!plain) return { rest: req };
  const { bytes, whole, rest } = await readUpTo(req.body as AsyncIterable<Uint8Array>, length ?? readMaxBytes + ENVELOPE_HEADER, length);
  const declared = bytes.byteLength >= ENVELOPE_HEADER ? new DataView(bytes.buffer, bytes.byteOffset).getUint32(1) : -1;
  const message = bytes.subarray(ENVELOPE_HEADER);
  if (!whole || bytes[0] !== 0 || declared !== message.byteLength) return { rest: { ...req, body: replay(bytes, rest) } };
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
