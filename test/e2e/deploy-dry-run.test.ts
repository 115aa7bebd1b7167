// `wrangler deploy --dry-run` on the real wrangler.toml (npm run deploy:check, also a CI step):
// the bundle builds and the configuration (bindings without ids, migrations, rate limiter,
// containers) is accepted, with no network at all where this machine can take it away.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** `unshare -rn`: a new network namespace with only a loopback that is down, if this machine allows one. */
const offline = spawnSync("unshare", ["-rn", "true"]).status === 0 ? ["unshare", "-rn"] : [];

it("wrangler deploy --dry-run accepts the real configuration, offline", async () => {
  if (offline.length === 0) console.warn("[e2e] unshare -rn is not available here: the dry run runs with the network");
  const out = await mkdtemp(join(tmpdir(), "kiln-dry-run-"));
  try {
    const argv = [...offline, `${root}node_modules/.bin/wrangler`, "deploy", "--dry-run", "--containers-rollout=none", "--outdir", out];
    const log = execFileSync(argv[0]!, argv.slice(1), {
      cwd: root,
      env: { ...process.env, PATH: `${root}node_modules/.bin:${process.env.PATH}`, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false", CI: "true" },
      encoding: "utf8",
    });
    expect(log).toContain("--dry-run: exiting now.");
    // Bindings wrangler will provision or find by name: no ids in the configuration.
    expect(await readFile(`${root}wrangler.toml`, "utf8")).not.toMatch(/^\s*(database_id|preview_database_id|id)\s*=/m);
    expect(log).toMatch(/env\.INDEX \(kiln-index\)\s+D1 Database/);
    expect(log).toMatch(/env\.CAS \(kiln-cas\)\s+R2 Bucket/);
    expect(await readdir(out)).toContain("index.js");
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
