// The google.rpc.Code vocabulary, one table for the worker, the bridge and the runner: each
// code's name (as googleapis JSON errors and google.rpc.Status carry it), the HTTP status that
// carries it, the code an HTTP status stands for, and the two errors every side builds.
// Platform-free: no Node and no Workers API.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, PreconditionFailureSchema } from "../gen/google/rpc/error_details_pb.ts";

export { Code, ConnectError };

/** googleapis' HTTP mapping of each code (google/rpc/code.proto). */
const httpStatusByCode: Record<Code, number> = {
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

export const httpStatusOf = (code: Code): number => httpStatusByCode[code] ?? 500;

/**
 * connect-es answers client mistakes with INTERNAL: a request message that is not valid binary
 * protobuf ("parse binary: ..."), an envelope flagged compressed without an encoding, and (in Node,
 * the bridge) a compressed body zlib cannot read, such as a truncated one. Its JSON codec says
 * INVALID_ARGUMENT for the same kind of mistake; so do the worker and the bridge.
 */
const MISCODED_CLIENT_FAULTS = ["parse binary:", "received compressed envelope, but do not know how to decompress", "decompression failed"];
export const isMiscodedClientFault = (code: Code, message: string) =>
  code === Code.Internal && MISCODED_CLIENT_FAULTS.some((p) => message.startsWith(p));

/** "INVALID_ARGUMENT" for Code.InvalidArgument; google.rpc spells Code.Canceled "CANCELLED". */
export const statusName = (code: Code): string =>
  code === Code.Canceled ? "CANCELLED" : Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();

const codeByName = new Map<string, Code>(
  Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map((c) => [statusName(c), c]),
);

/** The code of a google.rpc name ("NOT_FOUND"), or undefined for anything else. */
export const codeOfName = (name: string): Code | undefined => codeByName.get(name);

// The reverse direction is ambiguous (400 carries three codes): these are the codes
// google/rpc/code.proto names for each HTTP status, for answers whose body does not say.
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

/** The code an HTTP status stands for; any other 5xx (a proxy that lost its upstream) is worth a retry. */
export const codeOfHttpStatus = (status: number): Code =>
  codeByHttpStatus.get(status) ?? (status >= 500 ? Code.Unavailable : Code.Unknown);

/** INVALID_ARGUMENT, with a BadRequest field violation when the field is known. */
export const invalidArgument = (message: string, field?: string) =>
  new ConnectError(
    message,
    Code.InvalidArgument,
    undefined,
    field ? [{ desc: BadRequestSchema, value: { fieldViolations: [{ field, description: message }] } }] : [],
  );

/**
 * MISSING violations listed in one error. The details travel in the grpc-status-details-bin
 * trailer, base64, ~150 bytes a violation, and grpc-java (Bazel) refuses metadata over 8 KiB in
 * all: a longer list would reach it as an INTERNAL transport error instead of FAILED_PRECONDITION.
 * Clients upload what FindMissingBlobs reports before retrying, so the first ones suffice.
 */
export const MAX_MISSING_VIOLATIONS = 32;

/**
 * FAILED_PRECONDITION (or `code`: SpliceBlob's is NOT_FOUND) with one MISSING violation per blob
 * (`blobs/{hash}/{size}`), as REAPI clients expect: the first MAX_MISSING_VIOLATIONS of them, the
 * message saying how many there are.
 */
export const missingBlobs = (message: string, subjects: string[], code: Code = Code.FailedPrecondition) =>
  new ConnectError(subjects.length > MAX_MISSING_VIOLATIONS ? `${message} (the first ${MAX_MISSING_VIOLATIONS} of ${subjects.length} listed)` : message, code, undefined, [
    {
      desc: PreconditionFailureSchema,
      value: { violations: subjects.slice(0, MAX_MISSING_VIOLATIONS).map((subject) => ({ type: "MISSING", subject, description: "blob not in the CAS" })) },
    },
  ]);

/** The MISSING subjects of a FAILED_PRECONDITION error (empty for any other error). */
export function missingSubjects(e: unknown): string[] {
  if (!(e instanceof ConnectError) || e.code !== Code.FailedPrecondition) return [];
  return e
    .findDetails(PreconditionFailureSchema)
    .flatMap((f) => f.violations.filter((v) => v.type === "MISSING").map((v) => v.subject));
}
