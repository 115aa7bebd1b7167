import type { D1Migration } from "cloudflare:test";
import type { Env as WorkerEnv } from "../../src/env.ts";
declare global {
  namespace Cloudflare {
    interface Env extends WorkerEnv {
      /** migrations/, read by vitest.config.mts (test/workers/apply-migrations.ts applies them). */
      TEST_MIGRATIONS: D1Migration[];
      /** A rate limiter of 4 requests a minute (rate-limit.test.ts). */
      TIGHT_RATE_LIMIT: RateLimit;
    }
  }
}
export {};
