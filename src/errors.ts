// One error vocabulary for every surface: services throw ConnectError, surfaces render it.
import { Code, ConnectError } from "@connectrpc/connect";
import { create, toJson, type DescMessage, type MessageInitShape, createRegistry } from "@bufbuild/protobuf";
import { RetryInfoSchema, file_google_rpc_error_details } from "./gen/google/rpc/error_details_pb.ts";
import type { StatusSchema } from "./gen/google/rpc/status_pb.ts";
import { AnySchema, anyPack } from "@bufbuild/protobuf/wkt";

export { Code, ConnectError };

export { invalidArgument, missingBlobs } from "./shared/status.ts";
import { httpStatusOf, statusName } from "./shared/status.ts";

export const notFound = (message: string) => new ConnectError(message, Code.NotFound);
export const outOfRange = (message: string) => new ConnectError(message, Code.OutOfRange);

/**
 * Something Kiln called (R2, a Durable Object) failing, as the client is told: UNAVAILABLE,
 * "`what` (its reason); `advice`", which clients retry; not an internal error. A verdict already
 * given (a ConnectError) passes unchanged.
 */
export function unavailableFrom(what: string, e: unknown, advice = "retry"): ConnectError {
  if (e instanceof ConnectError) return e;
  return new ConnectError(`${what} (${e instanceof Error ? e.message : String(e)}); ${advice}`, Code.Unavailable, undefined, undefined, e);
}

/** Anything that is not a ConnectError is an internal fault; its text is not leaked. */
export function asConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  console.error("internal error", e);
  return new ConnectError("internal error", Code.Internal);
}

// The code tables are shared with the bridge and the runner (src/shared/status.ts).
export const httpStatus = httpStatusOf;
export { statusName };

const detailsRegistry = createRegistry(file_google_rpc_error_details);

/** The googleapis REST error body: {"error": {code, message, status, details}}. */
export function restErrorBody(err: ConnectError) {
  const details = err.details.map((d) => {
    if ("desc" in d) {
      const msg = create(d.desc as DescMessage, d.value as MessageInitShape<DescMessage>);
      return { "@type": `type.googleapis.com/${d.desc.typeName}`, ...(toJson(d.desc as DescMessage, msg, { registry: detailsRegistry }) as object) };
    }
    return { "@type": `type.googleapis.com/${d.type}` };
  });
  return { error: { code: httpStatus(err.code), message: err.rawMessage, status: statusName(err.code), details } };
}

/** The Retry-After value (seconds) of an error with a google.rpc.RetryInfo (rate-limit.ts). */
export function retryAfterOf(err: ConnectError): string | undefined {
  for (const d of err.details) {
    if ("desc" in d && d.desc.typeName === RetryInfoSchema.typeName) {
      const delay = (d.value as { retryDelay?: { seconds?: bigint } }).retryDelay;
      return String(Math.max(1, Number(delay?.seconds ?? 1n)));
    }
  }
  return undefined;
}

export function restErrorResponse(e: unknown, extraHeaders?: HeadersInit): Response {
  const err = asConnectError(e);
  const headers = new Headers(extraHeaders);
  headers.set("content-type", "application/json");
  const retryAfter = retryAfterOf(err);
  if (retryAfter) headers.set("retry-after", retryAfter);
  return new Response(JSON.stringify(restErrorBody(err)), { status: httpStatus(err.code), headers });
}

/** An error as a google.rpc.Status message (per-item statuses in batch responses), details kept. */
export function rpcStatusOf(e: unknown): MessageInitShape<typeof StatusSchema> {
  const err = asConnectError(e);
  const details = err.details.map((d) =>
    "desc" in d
      ? anyPack(d.desc as DescMessage, create(d.desc as DescMessage, d.value as MessageInitShape<DescMessage>))
      : create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
  );
  return { code: err.code, message: err.rawMessage, details };
}
