// The OperationDO of an operation name: one object per name. Names from clients are checked first
// (anything not `operations/{uuid}` is NOT_FOUND, never a new empty object); names this server
// stored itself (index rows, leases, the pool's outbox) are used as they are.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Env } from "../env.ts";

const OPERATION_NAME = /^operations\/[0-9a-f-]{36}$/;

/** The object of a name a client sent: NOT_FOUND unless it is one of this server's operation names. */
export function operationStub(env: Env, name: string) {
  if (!OPERATION_NAME.test(name)) throw new ConnectError(`"${name.slice(0, 100)}" is not an operation name of this server (operations/{uuid})`, Code.NotFound);
  return storedOperationStub(env, name);
}

/** The object of a name this server minted and stored. */
export const storedOperationStub = (env: Pick<Env, "OPERATION">, name: string) => env.OPERATION.get(env.OPERATION.idFromName(name));
