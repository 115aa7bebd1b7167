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
}

interface KeyEntry {
  digest: Uint8Array;
  principal: Principal;
}

export interface KeyConfig {
  open: boolean;
  keys: KeyEntry[];
}

const OPEN: Principal = { authenticated: true, tenant: "default", instances: [""], canWrite: true, label: "open" };
const ANONYMOUS: Principal = { authenticated: false, tenant: "default", instances: [], canWrite: false, label: "anonymous" };

const sha256 = async (s: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));

/**
 * API_KEYS is JSON: [{"key": "...", "instances": ["ci", "team/"], "access": "read" | "read-write",
 * "tenant": "acme", "name": "ci-bot"}]. An instance prefix matches itself and names below it.
 */
export async function parseKeyConfig(raw: string | undefined): Promise<KeyConfig> {
  if (!raw || !raw.trim()) return { open: true, keys: [] };
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch {
    throw new Error("API_KEYS is not valid JSON");
  }
  if (!Array.isArray(list)) throw new Error("API_KEYS must be a JSON array");
  const keys: KeyEntry[] = [];
  for (const [i, k] of list.entries()) {
    if (typeof k?.key !== "string" || k.key.length < 8) throw new Error(`API_KEYS[${i}].key must be a string of 8+ characters`);
    const access = k.access ?? "read-write";
    if (access !== "read" && access !== "read-write") throw new Error(`API_KEYS[${i}].access must be "read" or "read-write"`);
    const instances: string[] = k.instances ?? [""];
    if (!Array.isArray(instances) || instances.some((p) => typeof p !== "string")) {
      throw new Error(`API_KEYS[${i}].instances must be an array of strings`);
    }
    keys.push({
      digest: await sha256(k.key),
      principal: {
        authenticated: true,
        tenant: typeof k.tenant === "string" && k.tenant ? k.tenant : "default",
        instances,
        canWrite: access === "read-write",
        label: typeof k.name === "string" ? k.name : `key #${i}`,
      },
    });
  }
  return { open: keys.length === 0, keys };
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

/** Compares the key's SHA-256 with every configured key in constant time. */
export async function resolvePrincipal(config: KeyConfig, key: string | undefined): Promise<Principal> {
  // A lease token is checked first, open server or not: it carries the operation's tenant.
  if (key?.startsWith(TOKEN_PREFIX)) {
    const claims = await verifyToken(kilnEnv(), key);
    if (claims?.kind !== "lease") return ANONYMOUS;
    return { authenticated: true, tenant: claims.tenant, instances: [claims.instanceName], canWrite: true, label: `lease of ${claims.operation}`, lease: claims };
  }
  if (config.open) return OPEN;
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

export function authorize(p: Principal, instanceName: string, access: Access): void {
  authenticate(p);
  if (!p.instances.some((prefix) => covers(prefix, instanceName))) {
    throw new ConnectError(`API key "${p.label}" may not use instance "${instanceName}"`, Code.PermissionDenied);
  }
  if (access === "write" && !p.canWrite) {
    throw new ConnectError(`API key "${p.label}" is read-only`, Code.PermissionDenied);
  }
}
