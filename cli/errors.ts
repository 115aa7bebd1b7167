// Errors as the bridge hands them to native gRPC clients.
import { createRegistry, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";
import type { OutgoingHttpHeaders } from "node:http";
import type { Http2ServerResponse } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { file_google_rpc_error_details } from "../src/gen/google/rpc/error_details_pb.ts";
import { codeOfHttpStatus, codeOfName, isMiscodedClientFault } from "../src/shared/status.ts";

/**
 * A clean copy of an error: code, message and details only. An error from the upstream client
 * carries the worker's HTTP/1.1 response headers as metadata, which connect-node would copy into
 * the HTTP/2 trailers (and connection-specific ones are illegal in HTTP/2).
 */
export function relayed(e: unknown): ConnectError {
  if (!(e instanceof ConnectError)) return new ConnectError(`bridge: ${String(e)}`, Code.Internal, undefined, undefined, e);
  // A request the bridge itself could not parse is the client's mistake, whatever connect-es says.
  const code = isMiscodedClientFault(e.code, e.rawMessage) ? Code.InvalidArgument : e.code;
  const copy = new ConnectError(e.rawMessage, code, undefined, undefined, e);
  copy.details = e.details;
  return copy;
}

const detailsRegistry = createRegistry(file_google_rpc_error_details);

interface RestError {
  error?: { message?: string; status?: string; details?: JsonValue[] };
}

/**
 * The worker's REST error `{"error": {code, message, status, details}}` as the gRPC status it
 * stands for. A body without one (a proxy's page, the edge's 413) leaves only the HTTP status,
 * mapped by `codeOf` (REST's mapping unless the caller speaks gRPC's).
 */
export async function fromHttpError(res: Response, codeOf: (status: number) => Code = codeOfHttpStatus): Promise<ConnectError> {
  const text = await res.text().catch(() => "");
  let body: RestError = {};
  try {
    body = (JSON.parse(text) ?? {}) as RestError;
  } catch {
    // not JSON (a proxy's or a crashed worker's answer): the HTTP status is all we have
  }
  const code = codeOfName(body.error?.status ?? "") ?? codeOf(res.status);
  const err = new ConnectError(body.error?.message ?? `worker answered HTTP ${res.status}: ${text.slice(0, 200)}`, code);
  err.details = (body.error?.details ?? []).flatMap((json) => {
    try {
      const any = fromJson(AnySchema, json, { registry: detailsRegistry });
      return [{ type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1), value: any.value }];
    } catch {
      return []; // a detail type we cannot encode is dropped, the status still gets through
    }
  });
  return err;
}

/**
 * fromHttpError for an answer read off a node:http response: its status and the body read. A
 * status a fetch Response cannot carry a body with (204, 205, 304) or cannot hold at all (under
 * 200, over 599) is mapped by `codeOf` alone, never thrown (one odd upstream answer must not take
 * the bridge down).
 */
export function errorOfAnswer(status: number | undefined, body: Buffer, codeOf: (status: number) => Code = codeOfHttpStatus): Promise<ConnectError> {
  const s = status ?? 0;
  if (s < 200 || s > 599) return Promise.resolve(new ConnectError(`worker answered HTTP ${s}`, codeOf(s)));
  return fromHttpError(new Response([204, 205, 304].includes(s) ? null : body, { status: s }), codeOf);
}

/**
 * grpc-message encoded as the gRPC spec says: only bytes outside printable ASCII, and "%", are
 * percent-encoded. connect-es encodes it with encodeURIComponent (":" becomes "%3A", "/" "%2F"),
 * which grpc-js undoes with decodeURI, leaving its users to read "blob abc%3A the data ..."
 * (grpc-java and gRPC C-core decode either form, so they see no change).
 */
export function specGrpcMessage(encoded: string): string {
  let text: string;
  try {
    text = decodeURIComponent(encoded);
  } catch {
    return encoded; // not percent-encoding we understand: pass it on as it came
  }
  let out = "";
  for (const b of new TextEncoder().encode(text)) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * The trailers connect-es writes for the calls the bridge serves itself: grpc-message encoded as
 * the spec says (specGrpcMessage), and one miscoded status corrected. A unary request the bridge
 * cannot parse fails before any interceptor runs, so relayed() never sees it and connect-es writes
 * grpc-status 13 into the trailers itself: correct it there.
 */
export function fixMiscodedTrailers(res: Http2ServerResponse): Http2ServerResponse {
  const addTrailers = res.addTrailers.bind(res);
  res.addTrailers = (trailers: OutgoingHttpHeaders) => {
    let message = "";
    try {
      message = decodeURIComponent(String(trailers["grpc-message"] ?? ""));
    } catch {
      // not ours to fix
    }
    if (trailers["grpc-status"] === String(Code.Internal) && isMiscodedClientFault(Code.Internal, message)) trailers["grpc-status"] = String(Code.InvalidArgument);
    if (typeof trailers["grpc-message"] === "string") trailers["grpc-message"] = specGrpcMessage(trailers["grpc-message"]);
    addTrailers(trailers);
  };
  return res;
}
