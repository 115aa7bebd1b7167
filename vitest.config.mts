import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { TEST_RUNNER_KEY } from "./test/workers/runner-key.ts";

// The D1 schema as deployed: test/workers/apply-migrations.ts applies migrations/ before each file.
const migrations = await readD1Migrations("./migrations");

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      // Remote execution runs on scripted runners (fake-runner.ts) that dial the pool with this
      // key; leases are short so lost runners are noticed within a test.
      miniflare: {
        bindings: {
          RUNNER_KEYS: JSON.stringify([{ name: "test", key: TEST_RUNNER_KEY }]),
          RUNNER_HEARTBEAT_SECONDS: "0.2",
          RUNNER_LEASE_SECONDS: "2",
          // Tests reach the worker as http://kiln, not a loopback host: without ALLOW_OPEN an open
          // Kiln would refuse their writes (test/workers/safe-defaults.test.ts unsets it).
          ALLOW_OPEN: "true",
          // Off: the fuzz suites alone would print 20,000 lines (access-log.test.ts turns it on).
          ACCESS_LOG: "false",
          // Resumable (multipart) uploads from 8 MiB, so tests reach that path with small blobs.
          RESUMABLE_UPLOAD_ABOVE_BYTES: String(8 * 1024 * 1024),
          TEST_MIGRATIONS: migrations,
          // Off: tests remove index rows behind the index's back (eviction without its minimum
          // lifetime), which the existence cache may by design not see for its TTL.
          // test/workers/cas-index.test.ts tests the cache with its own instances.
          CAS_EXISTENCE_CACHE_SECONDS: "0",
        },
        // A rate limiter small enough to exceed in a test; rate-limit.test.ts swaps it in for
        // RATE_LIMIT (wrangler.toml's, far above what any other test sends).
        ratelimits: { TIGHT_RATE_LIMIT: { namespace_id: "4202", simple: { limit: 4, period: 60 } } },
      },
    }),
  ],
  test: {
    include: ["test/workers/**/*.test.ts"],
    globalSetup: ["test/workers/bep-fixtures-setup.ts", "test/workers/asset-origin-setup.ts"],
    setupFiles: ["test/workers/apply-migrations.ts"],
    // A 2-core machine, often shared with e2e runs: 5 s is too tight for the larger streaming tests.
    testTimeout: 40_000,
  },
});
