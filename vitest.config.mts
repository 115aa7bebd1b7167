import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { STAND_IN_URL } from "./test/workers/runner-stand-in.ts";

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      // Remote execution runs on the scripted runner stand-in that global-setup.ts starts.
      // Resumable (multipart) uploads from 8 MiB, so tests reach that path with small blobs.
      miniflare: { bindings: { RUNNER_URLS: STAND_IN_URL, RESUMABLE_UPLOAD_ABOVE_BYTES: String(8 * 1024 * 1024) } },
    }),
  ],
  test: {
    include: ["test/workers/**/*.test.ts"],
    globalSetup: ["test/workers/global-setup.ts"],
    // A 2-core machine, often shared with e2e runs: 5 s is too tight for the larger streaming tests.
    testTimeout: 20_000,
  },
});
