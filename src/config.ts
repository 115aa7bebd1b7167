// Server configuration read from the Worker's environment, parsed once per isolate.
import { env } from "cloudflare:workers";
import type { Env } from "./env.ts";
import { parseKeyConfig, type KeyConfig } from "./auth.ts";

export const kilnEnv = () => env as unknown as Env;

/** Default: 4 MiB minus room for framing, the gRPC message limit clients assume. */
const DEFAULT_MAX_BATCH = 4 * 1024 * 1024 - 64 * 1024;

export function maxBatchTotalSize(): number {
  const n = Number(kilnEnv().MAX_BATCH_TOTAL_SIZE_BYTES);
  return Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_MAX_BATCH;
}

/** Largest blob a client may inline in an ActionResult (stdout, stderr, output files) in total. */
export const MAX_INLINE_BYTES = 1024 * 1024;

let keyCache: { raw: string | undefined; config: Promise<KeyConfig> } | undefined;

export function keyConfig(): Promise<KeyConfig> {
  const raw = kilnEnv().API_KEYS;
  if (!keyCache || keyCache.raw !== raw) keyCache = { raw, config: parseKeyConfig(raw) };
  return keyCache.config;
}
