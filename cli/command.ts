// The shape of a `kiln` subcommand, and the checks and messages the subcommands share: a command
// is one entry in cli/kiln.ts's table, with its own --help text.
import { Code, ConnectError } from "@connectrpc/connect";

export interface Command {
  /** One line for `kiln --help`. */
  summary: string;
  /** `kiln <command> --help`: usage line, flags, environment. */
  help: string;
  run(args: string[]): Promise<void>;
}

/** A mistake on the command line: printed with the command's usage, exit status 2. */
export class UsageError extends Error {}

export const DEFAULT_UPSTREAM = "http://127.0.0.1:8787";

/** The worker's origin from --upstream: an http(s) URL, trailing slash dropped. */
export function upstreamUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--upstream ${raw} is not a URL (e.g. ${DEFAULT_UPSTREAM} or https://kiln.example.com)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`--upstream ${raw}: the worker speaks http:// or https://, not ${url.protocol}`);
  return raw.replace(/\/+$/, "");
}

export function portNumber(raw: string, flag = "--port"): number {
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || port > 65535) throw new UsageError(`${flag} ${raw} is not a port number (0-65535; 0 picks a free one)`);
  return port;
}

const causeCode = (e: unknown): string | undefined => {
  for (let c: unknown = e; c instanceof Error; c = c.cause) {
    const code = (c as NodeJS.ErrnoException).code;
    if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return code;
  }
  return undefined;
};

/**
 * Says what went wrong talking to the worker at `upstream`, in the terms the user can act on: the
 * address is wrong or down, the key was refused, or the worker's own error.
 */
export function describeUpstreamFailure(e: unknown, upstream: string): string {
  const network = causeCode(e);
  if (network === "ECONNREFUSED" || network === "ENOTFOUND" || network === "EAI_AGAIN" || network === "ECONNRESET" || network === "EHOSTUNREACH") {
    return `cannot reach the worker at ${upstream} (${network}): is it running, and is --upstream right?`;
  }
  // fetch's own refusals (a "bad port" it never dials, a malformed address) come without a code.
  if (e instanceof TypeError && e.message === "fetch failed") return `cannot reach the worker at ${upstream}: ${(e.cause as Error | undefined)?.message ?? e.message}`;
  if (e instanceof ConnectError) {
    if (e.code === Code.Unauthenticated) return `the worker at ${upstream} refused the API key (set KILN_API_KEY to a key from its API_KEYS): ${e.rawMessage}`;
    if (e.code === Code.PermissionDenied) return `the worker at ${upstream} refused the call for this key: ${e.rawMessage}`;
    if (e.code === Code.Unavailable && network) return `cannot reach the worker at ${upstream} (${network}): is it running, and is --upstream right?`;
    return `the worker at ${upstream} answered ${Code[e.code]}: ${e.rawMessage}`;
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * Asks the worker's /healthz before serving: a wrong --upstream, a server that is not Kiln and a
 * refused KILN_API_KEY show up now, not as failed builds later.
 */
export async function checkUpstream(upstream: string, apiKey?: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`${upstream}/healthz`, { signal: AbortSignal.timeout(10_000) });
  } catch (e) {
    throw new Error(describeUpstreamFailure(e, upstream));
  }
  const health = (await res.json().catch(() => undefined)) as { ok?: boolean; auth?: string; error?: string } | undefined;
  if (!health || typeof health.ok !== "boolean") {
    throw new Error(`${upstream} answered GET /healthz with HTTP ${res.status}, not a Kiln health report: is --upstream the Kiln worker?`);
  }
  if (!health.ok) throw new Error(`the worker at ${upstream} is misconfigured: ${health.error ?? health.auth}`);
  if (!apiKey || health.auth !== "keys") return;
  // The key is checked with the cheapest authenticated call there is.
  const caps = await fetch(`${upstream}/build.bazel.remote.execution.v2.Capabilities/GetCapabilities`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
    body: "{}",
    signal: AbortSignal.timeout(10_000),
  }).catch((e: unknown) => {
    throw new Error(describeUpstreamFailure(e, upstream));
  });
  if (caps.status === 401) {
    const body = (await caps.json().catch(() => ({}))) as { message?: string };
    throw new Error(`the worker at ${upstream} refused KILN_API_KEY: ${body.message ?? "UNAUTHENTICATED"}`);
  }
  await caps.body?.cancel();
}

/** A listen() failure as something to do about it. */
export function describeListenFailure(e: unknown, host: string, port: number, flag = "--port"): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE") return `port ${port} on ${host} is already in use (EADDRINUSE): stop what listens there or pick another with ${flag}`;
  if (code === "EADDRNOTAVAIL") return `${host} is not an address of this machine (EADDRNOTAVAIL): check --host`;
  if (code === "EACCES") return `not allowed to listen on ${host}:${port} (EACCES): ports below 1024 need privileges; pick another with ${flag}`;
  return `cannot listen on ${host}:${port}: ${e instanceof Error ? e.message : String(e)}`;
}
