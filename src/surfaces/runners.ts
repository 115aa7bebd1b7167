// The runners' door: `GET /v1/runners/connect?shard=N`, a WebSocket upgrade authenticated with a
// runner credential (RUNNER_KEYS) or a runner token the worker minted for a container. The
// connection itself is held by the pool shard (RunnerPoolDO); this route only checks who knocks.
import type { Hono } from "hono";
import { presentedKey } from "../auth.ts";
import { kilnEnv, poolShardCount } from "../config.ts";
import { Code, ConnectError, restErrorResponse } from "../errors.ts";
import { poolStub } from "../execution/pool.ts";
import { runnerCredential, type RunnerCredential } from "../execution/runner-keys.ts";
import { TOKEN_PREFIX, verifyToken } from "../execution/tokens.ts";

async function credentialOf(authorization: string | undefined): Promise<RunnerCredential> {
  const env = kilnEnv();
  const key = presentedKey(authorization);
  if (!key) throw new ConnectError("a runner key is required (Authorization: Bearer KEY, one of RUNNER_KEYS)", Code.Unauthenticated);
  if (key.startsWith(TOKEN_PREFIX)) {
    const claims = await verifyToken(env, key);
    if (claims?.kind === "runner") return { name: claims.name, tenant: claims.tenant };
    throw new ConnectError("the runner token is invalid or expired", Code.Unauthenticated);
  }
  let found: RunnerCredential | null;
  try {
    found = await runnerCredential(env.RUNNER_KEYS, key);
  } catch (e) {
    throw new ConnectError(`runners cannot connect: ${(e as Error).message}`, Code.FailedPrecondition);
  }
  if (!found) throw new ConnectError("the runner key is not one of RUNNER_KEYS", Code.Unauthenticated);
  return found;
}

export function mountRunners(app: Hono) {
  app.get("/v1/runners/connect", async (c) => {
    try {
      if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
        throw new ConnectError("this is the runners' WebSocket endpoint: connect with `kiln runner --url ... --token ...`", Code.InvalidArgument);
      }
      const credential = await credentialOf(c.req.header("authorization"));
      const shard = Number(c.req.query("shard") ?? "0");
      const shards = poolShardCount();
      if (!Number.isInteger(shard) || shard < 0 || shard >= shards) {
        throw new ConnectError(`shard must be an integer in [0, ${shards})`, Code.InvalidArgument);
      }
      const headers = new Headers(c.req.raw.headers);
      headers.delete("authorization");
      headers.set("x-kiln-runner-credential", credential.name);
      headers.set("x-kiln-runner-tenant", credential.tenant ?? "");
      headers.set("x-kiln-pool-shard", String(shard));
      return await poolStub(kilnEnv(), shard).fetch(new Request(c.req.url, { headers }));
    } catch (e) {
      return restErrorResponse(e);
    }
  });
}
