// The container binding as a source of runners: when work waits and no runner is connected, the
// pool starts RUNNER_CONTAINERS containers. Each runs the same runner program as a self-hosted
// machine and dials the pool like one, with a runner token the worker mints for it; nothing
// listens inside the container.
import type { Env } from "../env.ts";
import { mintToken } from "./tokens.ts";

/** Container runner tokens last this long; a container started later gets a fresh one. */
const CONTAINER_TOKEN_MS = 7 * 24 * 3600_000;

/** Starts the containers, telling them to dial the worker at `url` (config.ts publicUrl). */
export async function wakeContainers(env: Env, url: string): Promise<void> {
  const n = Number(env.RUNNER_CONTAINERS ?? "0");
  if (!env.RUNNER || !(n > 0)) return;
  const token = await mintToken(env, { kind: "runner", name: "container", tenant: null, expires: Date.now() + CONTAINER_TOKEN_MS });
  await Promise.all(
    Array.from({ length: n }, (_, i) => env.RUNNER!.get(env.RUNNER!.idFromName(`runner-${i}`)).wake(url, token)),
  );
}
