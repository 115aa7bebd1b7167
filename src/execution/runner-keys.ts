// Runner credentials: the secrets runners present when they dial the pool. They are separate from
// client API keys (a runner key cannot call the client APIs, a client key cannot take work).
// RUNNER_KEYS is JSON: [{"name": "ci-fleet", "key": "<32+ characters>", "tenant": "acme"}]; a key
// without "tenant" serves every tenant.
export interface RunnerCredential {
  name: string;
  /** null: the runner may run actions of any tenant. */
  tenant: string | null;
}

interface KeyEntry extends RunnerCredential {
  digest: Uint8Array;
}

export const MIN_RUNNER_KEY_LENGTH = 32;

const sha256 = async (s: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));

export async function parseRunnerKeys(raw: string | undefined): Promise<KeyEntry[]> {
  if (!raw || !raw.trim()) return [];
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch {
    throw new Error("RUNNER_KEYS is not valid JSON");
  }
  if (!Array.isArray(list)) throw new Error("RUNNER_KEYS must be a JSON array");
  const out: KeyEntry[] = [];
  for (const [i, k] of list.entries()) {
    const name = typeof k?.name === "string" && k.name ? k.name : `runner key #${i}`;
    if (typeof k?.key !== "string" || k.key.length < MIN_RUNNER_KEY_LENGTH) {
      throw new Error(`RUNNER_KEYS: "${name}" needs a key of at least ${MIN_RUNNER_KEY_LENGTH} characters`);
    }
    if (k.tenant !== undefined && (typeof k.tenant !== "string" || !k.tenant)) throw new Error(`RUNNER_KEYS: "${name}".tenant must be a non-empty string`);
    out.push({ name, tenant: k.tenant ?? null, digest: await sha256(k.key) });
  }
  return out;
}

let cache: { raw: string | undefined; keys: Promise<KeyEntry[]> } | undefined;

/** The credential a presented runner key stands for, or null. Constant time over all keys. */
export async function runnerCredential(raw: string | undefined, key: string): Promise<RunnerCredential | null> {
  if (!cache || cache.raw !== raw) cache = { raw, keys: parseRunnerKeys(raw) };
  const keys = await cache.keys;
  const d = await sha256(key);
  let found: RunnerCredential | null = null;
  for (const k of keys) if (crypto.subtle.timingSafeEqual(d, k.digest) && !found) found = { name: k.name, tenant: k.tenant };
  return found;
}
