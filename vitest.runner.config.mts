// The runner's own tests: plain Node (no workerd, no wrangler), against a stand-in worker
// (test/runner/fake-worker.ts). The workerd tests and the e2e tests have their own configs.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/runner/**/*.spec.ts", "container/runner/**/*.spec.ts", "cli/**/*.spec.ts"],
    environment: "node",
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
