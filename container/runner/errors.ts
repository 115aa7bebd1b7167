// Why an action could not run, as the runner protocol reports it: a google.rpc status name, the
// HTTP status that carries it, and for FAILED_PRECONDITION the blobs the CAS lacks.

export type RunnerStatus =
  | "INVALID_ARGUMENT"
  | "FAILED_PRECONDITION"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "INTERNAL";

const httpStatuses: Record<RunnerStatus, number> = {
  INVALID_ARGUMENT: 400,
  FAILED_PRECONDITION: 412,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  // 503 is reserved for "at capacity, try another runner"; CAS trouble is a 502.
  RESOURCE_EXHAUSTED: 503,
  UNAVAILABLE: 502,
  INTERNAL: 500,
};

export class RunnerError extends Error {
  constructor(
    readonly status: RunnerStatus,
    message: string,
    /** FAILED_PRECONDITION: `blobs/{hash}/{size}` of each blob the CAS does not have. */
    readonly missing?: string[],
  ) {
    super(message);
  }

  get httpStatus(): number {
    return httpStatuses[this.status];
  }

  toJSON() {
    return { error: { status: this.status, message: this.message, ...(this.missing ? { missing: this.missing } : {}) } };
  }
}

export const invalidArgument = (message: string) => new RunnerError("INVALID_ARGUMENT", message);

/** Any thrown value as a RunnerError (unknown failures are INTERNAL). */
export function asRunnerError(e: unknown): RunnerError {
  if (e instanceof RunnerError) return e;
  return new RunnerError("INTERNAL", e instanceof Error ? e.message : String(e));
}

/** The errno code of a Node system error, if it is one. */
export const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | null)?.code;
