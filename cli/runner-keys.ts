// Runner credentials as the worker reads them: the var RUNNER_KEYS is JSON
// `[{"name": "...", "key": "...", "tenant"?: "..."}]` (a key with a tenant serves that tenant only).
import { randomBytes } from "node:crypto";

export interface RunnerKey {
  name: string;
  key: string;
  tenant?: string;
}

/**
 * A fresh random key: "ki-" and 32 random bytes as 43 URL-safe characters. The prefix names it
 * and keeps it from starting with "-", which `kiln runner --token KEY` would read as an option
 * (one key in 64 did: the e2e stack's runner then failed to start).
 */
export const newRunnerKey = () => `ki-${randomBytes(32).toString("base64url")}`;

export const runnerKeysVar = (keys: RunnerKey[]) => JSON.stringify(keys);
