// Who is calling, from the request's headers: the one place every surface and service asks.
import { authenticate, presentedKey, resolvePrincipal, type Principal } from "./auth.ts";
import { note } from "./access-log.ts";
import { keyConfig } from "./config.ts";
import { enforceRate } from "./rate-limit.ts";

/**
 * The caller's principal (ANONYMOUS when keys are configured and none valid was presented). The
 * request URL decides whether an open service is local (read-write) or public (read-only).
 */
export async function callerOf(headers: Headers, url?: string): Promise<Principal> {
  const p = await resolvePrincipal(await keyConfig(), presentedKey(headers.get("authorization")), url);
  note(headers, { key: p.label, tenant: p.tenant });
  return p;
}

/**
 * UNAUTHENTICATED unless the caller presented a valid key (or the service runs open), and
 * RESOURCE_EXHAUSTED over the key's request rate. Surfaces call it before reading a request body,
 * so a stranger cannot make the worker read megabytes.
 */
export async function requireCaller(headers: Headers, url?: string): Promise<Principal> {
  const p = await callerOf(headers, url);
  await enforceRate(headers, p);
  authenticate(p);
  return p;
}
