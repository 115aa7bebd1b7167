// Who is calling, from the request's headers: the one place every surface and service asks.
import { authenticate, presentedKey, resolvePrincipal, type Principal } from "./auth.ts";
import { note, oncePerRequest } from "./access-log.ts";
import { keyConfig } from "./config.ts";
import { enforceRate } from "./rate-limit.ts";

/**
 * The caller's principal (ANONYMOUS when keys are configured and none valid was presented). The
 * request URL decides whether an open service is local (read-write) or public (read-only).
 * Resolved once per request (the gate, a lane and the method's scope all ask), given its URL.
 */
export function callerOf(headers: Headers, url?: string): Promise<Principal> {
  return oncePerRequest(headers, `caller ${url ?? ""}`, async () => {
    const p = await resolvePrincipal(await keyConfig(), presentedKey(headers.get("authorization")), url);
    note(headers, { key: p.label, tenant: p.tenant });
    return p;
  });
}

/**
 * UNAUTHENTICATED unless the caller presented a valid key (or the service runs open), and
 * RESOURCE_EXHAUSTED over the key's request rate. Every service method calls it (scopeFor) before
 * any work.
 */
export async function requireCaller(headers: Headers, url?: string): Promise<Principal> {
  const p = await callerOf(headers, url);
  await enforceRate(headers, p);
  authenticate(p);
  return p;
}

/**
 * The request gate, before a body is read: UNAUTHENTICATED unless the caller presented a valid key
 * (or the service runs open), so a stranger cannot make the worker parse megabytes. The request is
 * counted against the caller's rate here too, before a failed key is refused (guessing keys is
 * limited), but the verdict is left to requireCaller, before the work: the count's round trip to
 * the RATE_LIMIT binding runs while the body arrives. (Under wrangler dev that binding is
 * miniflare's Durable Object with a SQLite write per call, 2-4 ms of a request here.)
 */
export async function admitCaller(headers: Headers, url?: string): Promise<Principal> {
  const p = await callerOf(headers, url);
  enforceRate(headers, p).catch(() => {}); // awaited, and its refusal thrown, by requireCaller
  authenticate(p);
  return p;
}
