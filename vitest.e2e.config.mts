// e2e tests: plain Node, real servers (wrangler dev + the gRPC bridge), real clients. The workerd
// tests have their own config (vitest.config.mts).
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts"],
    environment: "node",
    // One file at a time: each starts its own wrangler + workerd and this is a 2-core machine.
    fileParallelism: false,
    // Bazel builds run for minutes; a stack takes a few seconds to start and stop.
    testTimeout: 20 * 60_000,
    hookTimeout: 5 * 60_000,
    teardownTimeout: 60_000,
  },
});
