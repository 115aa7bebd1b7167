// Finishing touches on the errors connect-es writes, on all three wire forms (unary Connect JSON,
// the Connect end-stream message, gRPC-web trailers):
// - connect-es answers two client mistakes with INTERNAL (grpc-status 13): a request message that
//   is not valid binary protobuf ("parse binary: ...") and an envelope flagged compressed without a
//   grpc-encoding. Its JSON codec says INVALID_ARGUMENT for the same kind of mistake; so do we.
// - Every error carries the request id as a google.rpc.RequestInfo detail, also the ones
//   connect-es raises itself before a service runs (parsing, the request gate, timeouts).
// Each chunk of an enveloped response body is one whole envelope (connect-es joins them one by
// one), so only the final trailer / end-stream envelope is ever looked at; data passes untouched.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { base64Decode, base64Encode } from "@bufbuild/protobuf/wire";
import { anyIs, anyPack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { UniversalHandlerFn, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { RequestInfoSchema } from "../gen/google/rpc/error_details_pb.ts";
import { StatusSchema } from "../gen/google/rpc/status_pb.ts";
import { note } from "../access-log.ts";
import { statusName } from "../errors.ts";
import { isMiscodedClientFault } from "../shared/status.ts";
import { requestIdOf } from "../request-id.ts";

const isClientFault = (code: string | undefined, message: string) => code === "internal" && isMiscodedClientFault(Code.Internal, message);

const GRPC_WEB_TRAILER = 0b1000_0000;
const CONNECT_END_STREAM = 0b0000_0010;
const REQUEST_INFO = RequestInfoSchema.typeName;

const enc = new TextEncoder();
const dec = new TextDecoder();

interface JsonError {
  code?: string;
  message?: string;
  details?: { type: string; value: string }[];
}

/** A Connect JSON error with the client-fault code fixed and the request id added. */
function fixJsonError(e: JsonError, requestId: string | undefined): JsonError {
  const out = { ...e };
  if (isClientFault(e.code, e.message ?? "")) out.code = "invalid_argument";
  if (requestId && !(e.details ?? []).some((d) => d.type === REQUEST_INFO)) {
    const value = base64Encode(toBinary(RequestInfoSchema, create(RequestInfoSchema, { requestId })), "std_raw");
    out.details = [...(e.details ?? []), { type: REQUEST_INFO, value }];
  }
  return out;
}

function envelope(flags: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + data.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, data.byteLength);
  out.set(data, 5);
  return out;
}

/** gRPC-web trailers are an HTTP/1 header block: "grpc-status: 13\r\ngrpc-message: ...\r\n". */
function fixGrpcWebTrailer(data: Uint8Array, requestId: string | undefined): Uint8Array | undefined {
  const lines = dec.decode(data).split("\r\n").filter((l) => l !== "");
  const value = (name: string) => lines.find((l) => l.toLowerCase().startsWith(name + ":"))?.slice(name.length + 1).trim();
  const status = Number(value("grpc-status") ?? "0");
  if (status === 0) return undefined;
  const message = decodeURIComponent(value("grpc-message") ?? "");
  const code = isClientFault("internal", message) && status === Code.Internal ? Code.InvalidArgument : status;
  const details = value("grpc-status-details-bin");
  const st = details ? fromBinary(StatusSchema, base64Decode(details)) : create(StatusSchema, { code, message });
  st.code = code;
  if (requestId && !st.details.some((a) => anyIs(a, RequestInfoSchema))) {
    st.details.push(anyPack(RequestInfoSchema, create(RequestInfoSchema, { requestId })));
  }
  const kept = lines.filter((l) => !/^grpc-(status|status-details-bin):/i.test(l));
  const out = [`grpc-status: ${code}`, ...kept, `grpc-status-details-bin: ${base64Encode(toBinary(StatusSchema, st), "std")}`];
  return enc.encode(out.join("\r\n") + "\r\n");
}

function fixConnectEndStream(data: Uint8Array, requestId: string | undefined): Uint8Array | undefined {
  const end = JSON.parse(dec.decode(data)) as { error?: JsonError };
  if (!end.error) return undefined;
  return enc.encode(JSON.stringify({ ...end, error: fixJsonError(end.error, requestId) }));
}

/** The google.rpc.Code name a final frame carries, for the access log. */
function codeOfFinalFrame(flags: number, data: Uint8Array): string | undefined {
  if (flags & GRPC_WEB_TRAILER) {
    const n = Number(/grpc-status:\s*(\d+)/i.exec(dec.decode(data))?.[1] ?? "0");
    return n === 0 ? "OK" : statusName(n as Code);
  }
  if (flags & CONNECT_END_STREAM) {
    const code = (JSON.parse(dec.decode(data)) as { error?: JsonError }).error?.code;
    return code ? code.toUpperCase() : "OK";
  }
  return undefined;
}

function fixEnvelope(chunk: Uint8Array, requestId: string | undefined, header: Headers): Uint8Array {
  if (chunk.byteLength < 5) return chunk;
  const flags = chunk[0]!;
  const data = chunk.subarray(5);
  try {
    const fixed =
      flags & GRPC_WEB_TRAILER
        ? fixGrpcWebTrailer(data, requestId)
        : flags & CONNECT_END_STREAM
          ? fixConnectEndStream(data, requestId)
          : undefined;
    const final = fixed ?? data;
    const code = codeOfFinalFrame(flags, final);
    if (code) note(header, { code });
    return fixed ? envelope(flags, fixed) : chunk;
  } catch {
    return chunk; // not an error we can read: leave it exactly as connect-es wrote it
  }
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

async function* mapChunks(body: AsyncIterable<Uint8Array>, fn: (c: Uint8Array) => Uint8Array): AsyncIterable<Uint8Array> {
  for await (const chunk of body) yield fn(chunk);
}

/** A unary Connect error is one small JSON body with an HTTP status. */
async function fixUnary(res: UniversalServerResponse, requestId: string | undefined): Promise<UniversalServerResponse> {
  const chunks: Uint8Array[] = [];
  for await (const c of res.body!) chunks.push(c);
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let err: JsonError;
  try {
    err = JSON.parse(dec.decode(bytes)) as JsonError;
  } catch {
    return { ...res, body: once(bytes) };
  }
  const fixed = fixJsonError(err, requestId);
  const body = enc.encode(JSON.stringify(fixed));
  const header = new Headers(res.header);
  header.set("content-length", String(body.byteLength));
  return { ...res, status: fixed.code === err.code ? res.status : 400, header, body: once(body) };
}

export function finishConnectErrors(handler: UniversalHandlerFn): UniversalHandlerFn {
  return async (req) => {
    const res = await handler(req);
    if (!res.body) return res;
    const requestId = requestIdOf(req.header);
    const type = res.header?.get("content-type") ?? "";
    if (res.status >= 400 && type.startsWith("application/json")) return fixUnary(res, requestId);
    if (/^application\/(grpc-web|connect\+)/.test(type)) return { ...res, body: mapChunks(res.body, (c) => fixEnvelope(c, requestId, req.header)) };
    return res;
  };
}
