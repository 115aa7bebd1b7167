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

/** The worker's REST error `{"error": {code, message, status, details}}` as the gRPC status it stands for. */
export async function fromHttpError(res: Response): Promise<ConnectError> {
  const text = await res.text().catch(() => "");
  let body: RestError = {};
  try {
    body = (JSON.parse(text) ?? {}) as RestError;
  } catch {
    // not JSON (a proxy's or a crashed worker's answer): the HTTP status is all we have
  }
  const code = codeOfName(body.error?.status ?? "") ?? codeOfHttpStatus(res.status);
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
 * A unary request the bridge cannot parse fails before any interceptor runs, so relayed() never
 * sees it and connect-es writes grpc-status 13 into the trailers itself: correct it there.
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
    addTrailers(trailers);
  };
  return res;
}
