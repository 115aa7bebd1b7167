// One error vocabulary for every surface: services throw ConnectError, surfaces render it.
import { Code, ConnectError } from "@connectrpc/connect";
import { create, toJson, type DescMessage, type MessageInitShape, createRegistry } from "@bufbuild/protobuf";
import {
  BadRequestSchema,
  PreconditionFailureSchema,
  file_google_rpc_error_details,
} from "./gen/google/rpc/error_details_pb.ts";
import type { StatusSchema } from "./gen/google/rpc/status_pb.ts";
import { AnySchema, anyPack } from "@bufbuild/protobuf/wkt";

export { Code, ConnectError };

export const invalidArgument = (message: string, field?: string) =>
  new ConnectError(
    message,
    Code.InvalidArgument,
    undefined,
    field ? [{ desc: BadRequestSchema, value: { fieldViolations: [{ field, description: message }] } }] : [],
  );

export const notFound = (message: string) => new ConnectError(message, Code.NotFound);
export const outOfRange = (message: string) => new ConnectError(message, Code.OutOfRange);

/** FAILED_PRECONDITION with one MISSING violation per blob, as Execute and clients expect. */
export const missingBlobs = (message: string, subjects: string[]) =>
  new ConnectError(message, Code.FailedPrecondition, undefined, [
    {
      desc: PreconditionFailureSchema,
      value: { violations: subjects.map((subject) => ({ type: "MISSING", subject, description: "blob not in the CAS" })) },
    },
  ]);

/** Anything that is not a ConnectError is an internal fault; its text is not leaked. */
export function asConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  console.error("internal error", e);
  return new ConnectError("internal error", Code.Internal);
}

const httpStatusOf: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

export const httpStatus = (code: Code) => httpStatusOf[code] ?? 500;

/** The google.rpc.Code enum name, e.g. "INVALID_ARGUMENT", as googleapis JSON errors carry it. */
export const statusName = (code: Code) =>
  Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase().replace("CANCELED", "CANCELLED");

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

export function restErrorResponse(e: unknown, extraHeaders?: HeadersInit): Response {
  const err = asConnectError(e);
  const headers = new Headers(extraHeaders);
  headers.set("content-type", "application/json");
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
