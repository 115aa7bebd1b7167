// What every service method needs about its caller: who it is and where its data lives.
import type { HandlerContext } from "@connectrpc/connect";
import { authenticate, authorize, presentedKey, resolvePrincipal, type Access, type Principal } from "../auth.ts";
import { kilnEnv, keyConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { BlobStore } from "../storage/blob-store.ts";
import { parseInstanceName } from "../storage/instance-name.ts";

export interface Scope {
  env: Env;
  principal: Principal;
  instanceName: string;
  store: BlobStore;
}

/**
 * Authenticates the caller (from the Authorization header of whatever surface carried the call),
 * validates the instance name and checks the key may use it.
 */
export async function scopeFor(ctx: HandlerContext, instanceName: string, access: Access): Promise<Scope> {
  const principal = await resolvePrincipal(await keyConfig(), presentedKey(ctx.requestHeader.get("authorization")));
  authenticate(principal);
  const name = parseInstanceName(instanceName);
  authorize(principal, name, access);
  const env = kilnEnv();
  return { env, principal, instanceName: name, store: new BlobStore(env, principal.tenant) };
}
