// Request ids: Cloudflare's cf-ray when present, else a fresh UUID. The access log wrapper puts it
// on the request as x-request-id, echoes it in the response header, and every error Kiln raises
// carries it as a google.rpc.RequestInfo detail, so a user's error report finds the log line.
import { Code, ConnectError } from "@connectrpc/connect";
import { RequestInfoSchema } from "./gen/google/rpc/error_details_pb.ts";

export const REQUEST_ID_HEADER = "x-request-id";

export const newRequestId = (headers: Headers) => headers.get("cf-ray") || crypto.randomUUID();

export const requestIdOf = (headers: Headers) => headers.get(REQUEST_ID_HEADER) ?? undefined;

/** The RequestInfo detail, as ConnectError details and the REST error body carry it. */
export const requestInfoDetail = (requestId: string) => ({ desc: RequestInfoSchema, value: { requestId } });

/** `e` as a ConnectError that carries the request id (once); an internal fault is logged with it. */
export function withRequestId(e: unknown, requestId: string | undefined): ConnectError {
  let err: ConnectError;
  if (e instanceof ConnectError) err = e;
  else {
    console.error(JSON.stringify({ level: "error", requestId, error: String(e), stack: e instanceof Error ? e.stack : undefined }));
    err = new ConnectError("internal error", Code.Internal);
  }
  const has = err.details.some((d) => ("desc" in d ? d.desc.typeName : d.type) === RequestInfoSchema.typeName);
  if (requestId && !has) err.details.push(requestInfoDetail(requestId));
  return err;
}
