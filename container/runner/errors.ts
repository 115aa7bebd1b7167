// Why an action could not run, as the runner reports it: a ConnectError (the shared google.rpc
// vocabulary of src/shared/status.ts), sent to the worker as the google.rpc.Status of
// CompleteRequest.error, with PreconditionFailure MISSING violations for absent blobs.
import { create } from "@bufbuild/protobuf";
import { anyPack, AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { StatusSchema, type Status } from "../../src/gen/google/rpc/status_pb.ts";
import { Code, ConnectError } from "../../src/shared/status.ts";

export { Code, ConnectError };
export { invalidArgument, missingBlobs, missingSubjects } from "../../src/shared/status.ts";

/** Any thrown value as a ConnectError (unknown failures are INTERNAL). */
export function asConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  return new ConnectError(e instanceof Error ? e.message : String(e), Code.Internal);
}

/** The error as the google.rpc.Status the worker receives, details packed as Any. */
export function toStatus(e: unknown): Status {
  const err = asConnectError(e);
  const details: Any[] = err.details.map((d) =>
    "desc" in d ? anyPack(d.desc, create(d.desc, d.value)) : create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
  );
  return create(StatusSchema, { code: err.code, message: err.rawMessage, details });
}

/** The errno code of a Node system error, if it is one. */
export const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | null)?.code;
