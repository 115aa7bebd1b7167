// Calling an InvocationDO: its stub (one per tenant and invocation id), and its answers. Errors
// cross the Durable Object RPC boundary as data, since a thrown ConnectError would lose its code.
import { Code, ConnectError } from "../errors.ts";
import type { Env } from "../env.ts";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.ts";

export type InvocationResult = { response: Uint8Array } | { error: { code: Code; message: string; field?: string } };

export const invocationStub = (env: Env, tenant: string, invocationId: string) => env.INVOCATION.get(env.INVOCATION.idFromName(`${tenant}\n${invocationId}`));

/** In the Durable Object: a ConnectError as data (anything else is a fault and is rethrown). */
export function failureOf(e: unknown): InvocationResult {
  if (!(e instanceof ConnectError)) throw e;
  const violation = e.details.find((d) => "value" in d && "fieldViolations" in (d.value as object)) as
    | { value: { fieldViolations: { field: string }[] } }
    | undefined;
  return { error: { code: e.code, message: e.rawMessage, field: violation?.value.fieldViolations[0]?.field } };
}

/** In the service: the response, or the Durable Object's error thrown again as a ConnectError. */
export function responseOf(result: InvocationResult): Uint8Array {
  if ("response" in result) return result.response;
  const { code, message, field } = result.error;
  const details = field ? [{ desc: BadRequestSchema, value: { fieldViolations: [{ field, description: message }] } }] : [];
  throw new ConnectError(message, code, undefined, details);
}
