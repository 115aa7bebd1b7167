// Runner credentials as the worker reads them: the var RUNNER_KEYS is JSON
// `[{"name": "...", "key": "...", "tenant"?: "..."}]` (a key with a tenant serves that tenant only).
import { randomBytes } from "node:crypto";

export interface RunnerKey {
  name: string;
  key: string;
  tenant?: string;
}

/** A fresh random key: 32 bytes, 43 URL-safe characters. */
export const newRunnerKey = () => randomBytes(32).toString("base64url");

export const runnerKeysVar = (keys: RunnerKey[]) => JSON.stringify(keys);
