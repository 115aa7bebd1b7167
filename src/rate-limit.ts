// Per-key request rates. In production the Workers rate limiting binding (RATE_LIMIT, wrangler.toml
// [[ratelimits]]) counts; under wrangler dev and in the tests miniflare implements the same binding,
// so the code path is the same everywhere. Without the binding nothing is limited.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Principal } from "./auth.ts";
import { oncePerRequest } from "./access-log.ts";
import { kilnEnv } from "./config.ts";
import { ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.ts";

/** The binding's period, which is all a limited caller needs to wait: its window has then passed. */
function periodSeconds(): number {
  const n = Number(kilnEnv().RATE_LIMIT_PERIOD_SECONDS);
  return Number.isSafeInteger(n) && n > 0 ? n : 10;
}

/**
 * Who is counted: the key (by tenant and name), a runner's lease by its operation, and callers
 * without a key (an open Kiln, or a key that failed) by their address, so guessing keys is limited too.
 */
function rateKeyOf(p: Principal, headers: Headers): { key: string; who: string } {
  if (p.lease) return { key: `lease:${p.lease.operation}`, who: `the runner lease of ${p.lease.operation}` };
  // An open Kiln's principals ("open", "open (read-only)") stand for everyone: count addresses.
  if (p.authenticated && !p.label.startsWith("open")) return { key: `key:${p.tenant}/${p.label}`, who: `API key "${p.label}"` };
  return { key: `addr:${headers.get("cf-connecting-ip") ?? "local"}`, who: "this client address" };
}

/** RESOURCE_EXHAUSTED with a google.rpc.RetryInfo (HTTP surfaces: 429 and Retry-After) once over the rate. */
export function enforceRate(headers: Headers, p: Principal): Promise<void> {
  // Each request is counted once, however many times its caller is looked up (gate, lane, scope).
  return oncePerRequest(headers, "rate count", () => count(rateKeyOf(p, headers)));
}

async function count({ key, who }: { key: string; who: string }): Promise<void> {
  const limiter = kilnEnv().RATE_LIMIT as RateLimit | undefined;
  if (!limiter) return;
  const { success } = await limiter.limit({ key });
  if (success) return;
  const seconds = periodSeconds();
  throw new ConnectError(`${who} is over its request rate (the RATE_LIMIT binding); retry in ${seconds} s`, Code.ResourceExhausted, undefined, [
    { desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(seconds) } } },
    { desc: ErrorInfoSchema, value: { reason: "RATE_LIMITED", domain: "kiln" } },
  ]);
}
