// API keys: who may read or write which instance names. Keys come from the API_KEYS secret.
import { Code, ConnectError } from "./errors.ts";
import { kilnEnv } from "./config.ts";
import { TOKEN_PREFIX, verifyToken, type LeaseClaims } from "./execution/tokens.ts";

export type Access = "read" | "write";

export interface Principal {
  /** false when keys are configured and the request carried no valid key. */
  authenticated: boolean;
  /** Namespace of the CAS and action cache; keys of one tenant share blobs. */
  tenant: string;
  /** Instance-name prefixes this key may use ("" or "*": all). */
  instances: string[];
  canWrite: boolean;
  /** A short, non-secret label for logs and errors. */
  label: string;
  /** Set when the caller is a runner holding one operation's lease token (see execution/tokens.ts). */
  lease?: LeaseClaims;
  /** Why a principal that may otherwise write cannot: said in every PERMISSION_DENIED for a write. */
  readOnlyReason?: string;
  /** May use operator endpoints (/metrics, /admin/...): keys with "admin": true, and an open service. */
  admin?: boolean;
  /** Why a principal that is not admin is refused operator endpoints, when it is not a key's doing. */
  notAdminReason?: string;
}

interface KeyEntry {
  digest: Uint8Array;
  principal: Principal;
}

export interface KeyConfig {
  open: boolean;
  keys: KeyEntry[];
  /** ALLOW_OPEN=true: the operator chose to accept anonymous writes on a public address. */
  allowOpen: boolean;
  /** PUBLIC_URL names a loopback host (or is unset): a local service. */
  localPublicUrl: boolean;
}

/** What the operator set beside API_KEYS that decides how an open service behaves. */
export interface OpenModeSettings {
  allowOpen?: string;
  publicUrl?: string;
}

/** Shorter keys are refused: a key is the only secret between the internet and the cache. */
export const MIN_KEY_LENGTH = 32;

const OPEN: Principal = { authenticated: true, tenant: "default", instances: [""], canWrite: true, label: "open", admin: true };
const ANONYMOUS: Principal = { authenticated: false, tenant: "default", instances: [], canWrite: false, label: "anonymous" };

const OPEN_READ_ONLY_REASON =
  "Kiln runs without API keys on a public address, so writes and Execute are refused: set API_KEYS " +
  "(see the README, API keys), or set ALLOW_OPEN=true to let anyone write deliberately";
// Nor may strangers read the operator endpoints: /metrics and /admin/cas/stats name tenants and
// measure their traffic.
const OPEN_NOT_ADMIN_REASON =
  "Kiln runs without API keys on a public address, so operator endpoints (/metrics, /admin/...) are refused: " +
  'set API_KEYS with an "admin": true key (see the README, API keys)';
const OPEN_READ_ONLY: Principal = {
  ...OPEN,
  canWrite: false,
  admin: false,
  label: "open (read-only)",
  readOnlyReason: OPEN_READ_ONLY_REASON,
  notAdminReason: OPEN_NOT_ADMIN_REASON,
};

/**
 * A loopback host: localhost, *.localhost, 127.0.0.0/8, ::1. On Cloudflare a request's host is
 * the route or custom domain it arrived on, so a deployed worker never sees a loopback host.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::1";
}

const hostOf = (url: string | undefined) => {
  try {
    return url ? new URL(url).hostname : undefined;
  } catch {
    return undefined;
  }
};

/** A malformed API_KEYS: every request is refused with this until the operator fixes it. */
const misconfigured = (message: string) =>
  new ConnectError(`Kiln is misconfigured: ${message}. The operator must fix the API_KEYS secret.`, Code.Unavailable);

const sha256 = async (s: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));

/**
 * API_KEYS is JSON: [{"key": "...", "instances": ["ci", "team/"], "access": "read" | "read-write",
 * "tenant": "acme", "name": "ci-bot", "admin": false}]. An instance prefix matches itself and names below it.
 */
export async function parseKeyConfig(raw: string | undefined, settings: OpenModeSettings = {}): Promise<KeyConfig> {
  const publicHost = hostOf(settings.publicUrl);
  const base = { allowOpen: settings.allowOpen === "true", localPublicUrl: !settings.publicUrl || (publicHost !== undefined && isLoopbackHost(publicHost)) };
  if (!raw || !raw.trim()) return { open: true, keys: [], ...base };
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch {
    throw misconfigured("API_KEYS is not valid JSON");
  }
  if (!Array.isArray(list)) throw misconfigured("API_KEYS must be a JSON array");
  const keys: KeyEntry[] = [];
  for (const [i, k] of list.entries()) {
    if (typeof k !== "object" || k === null) throw misconfigured(`API_KEYS[${i}] must be an object`);
    const label = typeof k.name === "string" && k.name ? k.name : `key #${i}`;
    const which = `API_KEYS[${i}] ("${label}")`;
    if (typeof k.key !== "string") throw misconfigured(`${which}: "key" must be a string`);
    if (k.key.length < MIN_KEY_LENGTH) {
      throw misconfigured(`${which}: the key is ${k.key.length} characters; keys must be at least ${MIN_KEY_LENGTH} (e.g. openssl rand -hex 32)`);
    }
    const access = k.access ?? "read-write";
    if (access !== "read" && access !== "read-write") throw misconfigured(`${which}: "access" must be "read" or "read-write"`);
    const instances: string[] = k.instances ?? [""];
    if (!Array.isArray(instances) || instances.some((p) => typeof p !== "string")) {
      throw misconfigured(`${which}: "instances" must be an array of strings`);
    }
    if (k.admin !== undefined && typeof k.admin !== "boolean") throw misconfigured(`${which}: "admin" must be true or false`);
    keys.push({
      digest: await sha256(k.key),
      principal: {
        authenticated: true,
        tenant: typeof k.tenant === "string" && k.tenant ? k.tenant : "default",
        instances,
        canWrite: access === "read-write",
        label,
        admin: k.admin === true,
      },
    });
  }
  return { open: keys.length === 0, keys, ...base };
}

/** The presented key: `Authorization: Bearer KEY`, or basic auth (the password, else the user). */
export function presentedKey(authorization: string | null | undefined): string | undefined {
  if (!authorization) return undefined;
  const [scheme, value] = authorization.trim().split(/\s+/, 2);
  if (!value) return undefined;
  if (/^bearer$/i.test(scheme!)) return value;
  if (/^basic$/i.test(scheme!)) {
    let decoded: string;
    try {
      decoded = atob(value);
    } catch {
      return undefined;
    }
    const colon = decoded.indexOf(":");
    if (colon < 0) return decoded;
    const pass = decoded.slice(colon + 1);
    return pass || decoded.slice(0, colon);
  }
  return undefined;
}

/**
 * Compares the key's SHA-256 with every configured key in constant time. Without keys the service
 * is open; on a public address (PUBLIC_URL, or the request's own URL) it is open for reading only,
 * unless ALLOW_OPEN=true.
 */
export async function resolvePrincipal(config: KeyConfig, key: string | undefined, requestUrl?: string): Promise<Principal> {
  // A lease token is checked first, open server or not: it carries the operation's tenant.
  if (key?.startsWith(TOKEN_PREFIX)) {
    const claims = await verifyToken(kilnEnv(), key);
    if (claims?.kind !== "lease") return ANONYMOUS;
    return { authenticated: true, tenant: claims.tenant, instances: [claims.instanceName], canWrite: true, label: `lease of ${claims.operation}`, lease: claims };
  }
  if (config.open) {
    const requestHost = hostOf(requestUrl);
    const local = config.localPublicUrl && (requestHost === undefined || isLoopbackHost(requestHost));
    return config.allowOpen || local ? OPEN : OPEN_READ_ONLY;
  }
  if (!key) return ANONYMOUS;
  const d = await sha256(key);
  let found: Principal | undefined;
  for (const entry of config.keys) {
    if (crypto.subtle.timingSafeEqual(d, entry.digest) && !found) found = entry.principal;
  }
  return found ?? ANONYMOUS;
}

const covers = (prefix: string, instance: string) =>
  prefix === "" || prefix === "*" || instance === prefix.replace(/\/$/, "") || instance.startsWith(prefix.endsWith("/") ? prefix : prefix + "/");

export function authenticate(p: Principal): void {
  if (!p.authenticated) {
    throw new ConnectError("a valid API key is required (Authorization: Bearer KEY)", Code.Unauthenticated);
  }
}

/** Whether the key's instance prefixes cover this instance. */
export const mayUseInstance = (p: Principal, instanceName: string) => p.instances.some((prefix) => covers(prefix, instanceName));

export function authorize(p: Principal, instanceName: string, access: Access): void {
  authenticate(p);
  if (!mayUseInstance(p, instanceName)) {
    throw new ConnectError(`API key "${p.label}" may not use instance "${instanceName}"`, Code.PermissionDenied);
  }
  if (access === "write") authorizeWrite(p);
}

/** Operator endpoints: an admin key where keys are configured. */
export function authorizeAdmin(p: Principal): void {
  authenticate(p);
  if (!p.admin) throw new ConnectError(p.notAdminReason ?? `API key "${p.label}" is not an admin key (set "admin": true on it in API_KEYS)`, Code.PermissionDenied);
}

export function authorizeWrite(p: Principal): void {
  if (!p.canWrite) throw new ConnectError(p.readOnlyReason ?? `API key "${p.label}" is read-only`, Code.PermissionDenied);
}
