// Errors as the bridge hands them to native gRPC clients.
import { createRegistry, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { file_google_rpc_error_details } from "../src/gen/google/rpc/error_details_pb.ts";

/**
 * A clean copy of an error: code, message and details only. An error from the upstream client
 * carries the worker's HTTP/1.1 response headers as metadata, which connect-node would copy into
 * the HTTP/2 trailers (and connection-specific ones are illegal in HTTP/2).
 */
export function relayed(e: unknown): ConnectError {
  if (!(e instanceof ConnectError)) return new ConnectError(`bridge: ${String(e)}`, Code.Internal, undefined, undefined, e);
  const copy = new ConnectError(e.rawMessage, e.code, undefined, undefined, e);
  copy.details = e.details;
  return copy;
}

// "INVALID_ARGUMENT" -> Code.InvalidArgument, the google.rpc.Code names of googleapis JSON errors.
const codeByStatus = new Map<string, Code>(
  Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map((c) => [Code[c].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase(), c]),
);
codeByStatus.set("CANCELLED", Code.Canceled);

// The code an HTTP status stands for when the body does not say: googleapis' REST mapping, as the
// worker renders it. Any other 5xx (e.g. wrangler's proxy losing the connection) is worth a retry.
const codeByHttpStatus = new Map<number, Code>([
  [400, Code.InvalidArgument],
  [401, Code.Unauthenticated],
  [403, Code.PermissionDenied],
  [404, Code.NotFound],
  [409, Code.Aborted],
  [416, Code.OutOfRange],
  [429, Code.ResourceExhausted],
  [499, Code.Canceled],
  [501, Code.Unimplemented],
  [504, Code.DeadlineExceeded],
]);
const codeOfHttpStatus = (status: number) => codeByHttpStatus.get(status) ?? (status >= 500 ? Code.Unavailable : Code.Unknown);

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
  const code = codeByStatus.get(body.error?.status ?? "") ?? codeOfHttpStatus(res.status);
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
