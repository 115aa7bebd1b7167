// Lease and runner tokens are signed with a secret only the deployment holds: TOKEN_SECRET, or one
// it generated for itself and keeps in D1. Before, a keyless deployment derived its key from
// empty configuration, so anyone could compute it and forge a lease that writes into the CAS (on
// a Kiln that is otherwise read-only to strangers) or a runner token that joins the pool.
import { SELF, env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { storedSecret } from "../../src/execution/token-secret.ts";
import { mintToken, type LeaseClaims } from "../../src/execution/tokens.ts";
import type { Env } from "../../src/env.ts";
import { connectClient, digestOf, errorOf } from "./helpers.ts";

const INSTANCE = "tokens";
const lease = (): LeaseClaims => ({
  kind: "lease",
  tenant: "default",
  instanceName: INSTANCE,
  operation: `operations/${crypto.randomUUID()}`,
  leaseId: crypto.randomUUID(),
  attempt: 1,
  shard: 0,
  runner: "r",
  credential: "c",
  expires: Date.now() + 3_600_000,
});

const b64url = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/** A token signed the way a keyless Kiln used to sign: HMAC with SHA-256 of configuration anyone can know. */
async function forged(claims: object, material: string): Promise<string> {
  const raw = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(material));
  const key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const payload = b64url(new TextEncoder().encode(JSON.stringify(claims)));
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(payload)));
  return `kiln1.${payload}.${b64url(sig)}`;
}

const write = async (token: string) => {
  const data = new TextEncoder().encode(`token write ${crypto.randomUUID()}`);
  const digest = await digestOf(data);
  const cas = connectClient(ContentAddressableStorage, { authorization: `Bearer ${token}` });
  return { digest, call: cas.batchUpdateBlobs({ instanceName: INSTANCE, requests: [{ digest, data }] }) };
};
const stored = async (digest: { hash: string; sizeBytes: bigint }) =>
  (await connectClient(ContentAddressableStorage).findMissingBlobs({ instanceName: INSTANCE, blobDigests: [digest] })).missingBlobDigests.length === 0;

describe("a keyless Kiln on a public address", () => {
  const saved = { ALLOW_OPEN: env.ALLOW_OPEN, RUNNER_KEYS: env.RUNNER_KEYS, API_KEYS: env.API_KEYS, TOKEN_SECRET: env.TOKEN_SECRET };
  beforeEach(() => {
    for (const k of Object.keys(saved)) delete (env as unknown as Record<string, unknown>)[k];
  });
  afterEach(() => void Object.assign(env, saved));

  it("refuses a lease token signed with the key anyone could derive: UNAUTHENTICATED, nothing stored", async () => {
    const { digest, call } = await write(await forged(lease(), "kiln-derived\n\n"));
    expect((await errorOf(call)).code).toBe(Code.Unauthenticated);
    expect(await stored(digest)).toBe(false);
  });

  it("refuses a runner token signed with that key at the runners' door", async () => {
    const token = await forged({ kind: "runner", name: "intruder", tenant: null, expires: Date.now() + 3_600_000 }, "kiln-derived\n\n");
    const res = await SELF.fetch("http://kiln/v1/runners/connect", { headers: { upgrade: "websocket", authorization: `Bearer ${token}` } });
    expect(res.status).toBe(401);
    expect(res.webSocket).toBeNull();
  });

  it("accepts the leases it minted itself, with the secret it generated and keeps in D1 (64 hex digits, the same for every isolate)", async () => {
    const { digest, call } = await write(await mintToken(env, lease()));
    await call;
    expect(await stored(digest)).toBe(true);
    const row = await env.INDEX.prepare("SELECT value FROM kiln_secrets WHERE name = 'token_signing'").first<{ value: string }>();
    expect(row?.value).toMatch(/^[0-9a-f]{64}$/);
    // The same secret is read back by any isolate, however many race to create it.
    expect(new Set(await Promise.all(Array.from({ length: 5 }, () => storedSecret(env.INDEX))))).toEqual(new Set([row!.value]));
  });
});

describe("the generated secret's first creation", () => {
  it("isolates racing to create it all read back the one that won", async () => {
    const before = await env.INDEX.prepare("SELECT * FROM kiln_secrets").all();
    await env.INDEX.prepare("DELETE FROM kiln_secrets").run();
    const secrets = await Promise.all(Array.from({ length: 8 }, () => storedSecret(env.INDEX)));
    expect(new Set(secrets).size).toBe(1);
    expect(secrets[0]).toMatch(/^[0-9a-f]{64}$/);
    // A deployment never loses its secret; put back the one this file's isolates have cached.
    await env.INDEX.prepare("DELETE FROM kiln_secrets").run();
    for (const r of before.results as { name: string; value: string; created_at: number }[]) {
      await env.INDEX.prepare("INSERT INTO kiln_secrets (name, value, created_at) VALUES (?, ?, ?)").bind(r.name, r.value, r.created_at).run();
    }
  });
});

describe("when D1 cannot be read", () => {
  const saved = { RUNNER_KEYS: env.RUNNER_KEYS, TOKEN_SECRET: env.TOKEN_SECRET, INDEX: env.INDEX };
  afterEach(() => void Object.assign(env, saved));

  it("a token is UNAVAILABLE saying why (never accepted, never called invalid); once D1 answers again it works", async () => {
    delete env.TOKEN_SECRET;
    const token = await mintToken(env, lease());
    const down = {
      prepare: (q: string) => saved.INDEX.prepare(q),
      batch: async () => {
        throw new Error("injected: D1 is unreachable");
      },
    } as unknown as D1Database;
    Object.assign(env, { INDEX: down } satisfies Partial<Env>);
    const { digest, call } = await write(token);
    const e = await errorOf(call);
    expect(e.code).toBe(Code.Unavailable);
    expect(e.rawMessage).toMatch(/token signing secret could not be read.*injected: D1 is unreachable/);
    expect(e.rawMessage).toMatch(/TOKEN_SECRET/);
    Object.assign(env, { INDEX: saved.INDEX });
    expect(await stored(digest)).toBe(false);
    await (await write(token)).call;
  });

  it("TOKEN_SECRET, when set, is the key: D1 is not asked", async () => {
    env.TOKEN_SECRET = "a-secret-only-the-operator-knows-0123456789";
    const token = await mintToken(env, lease());
    Object.assign(env, { INDEX: { batch: () => Promise.reject(new Error("D1 must not be asked")) } as unknown as D1Database });
    const { digest, call } = await write(token);
    await call;
    Object.assign(env, { INDEX: saved.INDEX });
    expect(await stored(digest)).toBe(true);
  });
});
