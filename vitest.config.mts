import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { STAND_IN_URL } from "./test/workers/runner-stand-in.ts";

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      // Remote execution runs on the scripted runner stand-in that global-setup.ts starts.
      // Tests reach the worker as http://kiln, not a loopback host: without ALLOW_OPEN an open
      // Kiln would refuse their writes (test/workers/safe-defaults.test.ts unsets it).
      // The access log is off: the fuzz suites alone would print 20,000 lines (access-log.test.ts turns it on).
      miniflare: { bindings: { RUNNER_URLS: STAND_IN_URL, ALLOW_OPEN: "true", ACCESS_LOG: "false" } },
    }),
  ],
  test: {
    include: ["test/workers/**/*.test.ts"],
    globalSetup: ["test/workers/global-setup.ts"],
    // A 2-core machine, often shared with e2e runs: 5 s is too tight for the larger streaming tests.
    testTimeout: 20_000,
  },
});
