// Who is calling, from the request's headers: the one place every surface and service asks.
import { authenticate, presentedKey, resolvePrincipal, type Principal } from "./auth.ts";
import { keyConfig } from "./config.ts";

/** The caller's principal (ANONYMOUS when keys are configured and none valid was presented). */
export async function callerOf(headers: Headers): Promise<Principal> {
  return resolvePrincipal(await keyConfig(), presentedKey(headers.get("authorization")));
}

/**
 * UNAUTHENTICATED unless the caller presented a valid key (or the service runs open). Surfaces call
 * it before reading a request body, so a stranger cannot make the worker read megabytes.
 */
export async function requireCaller(headers: Headers): Promise<Principal> {
  const p = await callerOf(headers);
  authenticate(p);
  return p;
}
