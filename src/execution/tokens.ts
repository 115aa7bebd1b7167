// Short-lived credentials the worker mints and later verifies without storing them: a lease token
// lets one runner read one operation's inputs and write its outputs (in that operation's tenant
// and instance) and report on that lease, until it expires; a runner token lets a container the
// worker started dial the pool. Format: `kiln1.{payload base64url}.{HMAC-SHA256 base64url}`.
//
// The signing key is TOKEN_SECRET when set; otherwise a random secret the deployment generated for
// itself (token-secret.ts). It is never derived from configuration: a keyless deployment would
// sign with a key anyone can compute, and a key holder could guess the text of API_KEYS.
import type { Env } from "../env.ts";
import { generatedSecret } from "./token-secret.ts";

export const TOKEN_PREFIX = "kiln1.";

export interface LeaseClaims {
  kind: "lease";
  tenant: string;
  instanceName: string;
  operation: string;
  leaseId: string;
  attempt: number;
  /** Which pool shard owns the lease. */
  shard: number;
  /** The runner holding the lease, and the name of the credential it connected with. */
  runner: string;
  credential: string;
  /** Milliseconds since the epoch. */
  expires: number;
}

export interface RunnerClaims {
  kind: "runner";
  name: string;
  tenant: string | null;
  expires: number;
}

export type TokenClaims = LeaseClaims | RunnerClaims;

const enc = new TextEncoder();
const b64url = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64url = (s: string) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

let keyCache: { material: string; key: Promise<CryptoKey> } | undefined;

async function signingKey(env: Env): Promise<CryptoKey> {
  const material = env.TOKEN_SECRET || `kiln-generated\n${await generatedSecret(env.INDEX)}`;
  if (keyCache?.material !== material) {
    keyCache = {
      material,
      key: crypto.subtle
        .digest("SHA-256", enc.encode(material))
        .then((raw) => crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"])),
    };
  }
  return keyCache.key;
}

export async function mintToken(env: Env, claims: TokenClaims): Promise<string> {
  const payload = b64url(enc.encode(JSON.stringify(claims)));
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", await signingKey(env), enc.encode(payload)));
  return `${TOKEN_PREFIX}${payload}.${b64url(sig)}`;
}

/**
 * The claims of a valid, unexpired token; null for anything else (never throws on bad input). A
 * signing key that cannot be read (D1 down) is UNAVAILABLE, not an invalid token.
 */
export async function verifyToken(env: Env, token: string, now = Date.now()): Promise<TokenClaims | null> {
  if (!token.startsWith(TOKEN_PREFIX)) return null;
  const [payload, sig, extra] = token.slice(TOKEN_PREFIX.length).split(".");
  if (!payload || !sig || extra !== undefined) return null;
  const key = await signingKey(env);
  try {
    const ok = await crypto.subtle.verify("HMAC", key, unb64url(sig), enc.encode(payload));
    if (!ok) return null;
    const claims = JSON.parse(new TextDecoder().decode(unb64url(payload))) as TokenClaims;
    if (typeof claims.expires !== "number" || claims.expires <= now) return null;
    if (claims.kind !== "lease" && claims.kind !== "runner") return null;
    return claims;
  } catch {
    return null;
  }
}
