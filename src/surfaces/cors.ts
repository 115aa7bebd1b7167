// CORS for browser tools on other origins (a gRPC-web or Connect client, a dashboard calling REST):
// the origins in CORS_ORIGINS may call every surface. Preflights are answered on every path. A
// browser only lets a page read the headers listed in Expose-Headers, so the ones gRPC-web and
// Connect carry their status in are listed. With "*" any origin may call, but never with
// credentials (the Fetch standard forbids the pair, and it would hand any site the user's session).
import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { kilnEnv } from "../config.ts";

/** Request headers a browser client of Kiln sends beyond the safelisted ones. */
const ALLOW_HEADERS = [
  "authorization",
  "content-type",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-content-encoding",
  "connect-accept-encoding",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "x-grpc-web",
  "x-user-agent",
  "x-goog-fieldmask",
  "x-request-id",
  "range",
  "build.bazel.remote.execution.v2.requestmetadata-bin",
];

/** Response headers a page may read: gRPC-web and Connect statuses, encodings, ranges, auth challenges. */
const EXPOSE_HEADERS = [
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "grpc-encoding",
  "grpc-accept-encoding",
  "connect-content-encoding",
  "connect-accept-encoding",
  "content-encoding",
  "content-range",
  "accept-ranges",
  "content-length",
  "www-authenticate",
  "x-request-id",
];

const common = {
  allowMethods: ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"],
  allowHeaders: ALLOW_HEADERS,
  exposeHeaders: EXPOSE_HEADERS,
  maxAge: 600,
};

export interface CorsConfig {
  /** "*": any origin, without credentials. */
  any: boolean;
  origins: Set<string>;
}

/**
 * CORS_ORIGINS: comma-separated origins ("https://ui.example.com,http://localhost:5173"), or "*".
 * An entry that is not an origin (a path, no scheme) is ignored rather than matched loosely.
 */
export function parseCorsOrigins(raw: string | undefined): CorsConfig {
  const entries = (raw ?? "").split(",").map((s) => s.trim().replace(/\/$/, "")).filter(Boolean);
  const origins = new Set<string>();
  for (const e of entries) {
    if (e === "*") continue;
    try {
      if (new URL(e).origin === e) origins.add(e);
      else console.warn(`CORS_ORIGINS: "${e}" is not an origin (scheme://host[:port]); ignored`);
    } catch {
      console.warn(`CORS_ORIGINS: "${e}" is not an origin (scheme://host[:port]); ignored`);
    }
  }
  return { any: entries.includes("*"), origins };
}

let cache: { raw: string | undefined; config: CorsConfig } | undefined;
const corsConfig = (): CorsConfig => {
  const raw = kilnEnv().CORS_ORIGINS;
  if (!cache || cache.raw !== raw) cache = { raw, config: parseCorsOrigins(raw) };
  return cache.config;
};

const anyOrigin = cors({ ...common, origin: "*" });
const listedOrigins = cors({
  ...common,
  origin: (origin) => (corsConfig().origins.has(origin) ? origin : null),
  credentials: true,
});

/** Without CORS_ORIGINS nothing is added; a preflight is still answered (and denies by omission). */
export const corsMiddleware: MiddlewareHandler = async (c, next) => {
  const config = corsConfig();
  if (config.any) return anyOrigin(c, next);
  if (config.origins.size > 0 && config.origins.has(c.req.header("origin") ?? "")) return listedOrigins(c, next);
  if (c.req.method === "OPTIONS") return new Response(null, { status: 204, headers: { vary: "Origin" } });
  await next();
  if (config.origins.size > 0) c.header("Vary", "Origin", { append: true });
};
