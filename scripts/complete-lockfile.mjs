// Adds lockfile entries for the other platforms' builds of buf and workerd (optional packages),
// which the registry mirror here does not serve, so `npm install` cannot record them. Without
// them `npm ci` refuses the lockfile as out of sync. The entries carry only version, os and cpu:
// on a machine of that platform npm fetches them by name; elsewhere it skips them.
// Run after `npm install` changes package-lock.json: node scripts/complete-lockfile.mjs
import { readFileSync, writeFileSync } from "node:fs";

const PLATFORMS = {
  "darwin-arm64": ["darwin", "arm64"], "darwin-x64": ["darwin", "x64"], "darwin-64": ["darwin", "x64"],
  "linux-armv7": ["linux", "arm"], "linux-aarch64": ["linux", "arm64"], "linux-arm64": ["linux", "arm64"],
  "linux-x64": ["linux", "x64"], "linux-64": ["linux", "x64"], "win32-arm64": ["win32", "arm64"],
  "win32-x64": ["win32", "x64"], "windows-64": ["win32", "x64"],
};

const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
const added = [];
for (const meta of Object.values(lock.packages)) {
  for (const [dep, version] of Object.entries(meta.optionalDependencies ?? {})) {
    const platform = dep.match(/^@(?:bufbuild\/buf|cloudflare\/workerd)-(.+)$/)?.[1];
    if (!platform || !PLATFORMS[platform] || lock.packages[`node_modules/${dep}`]) continue;
    const [os, cpu] = PLATFORMS[platform];
    lock.packages[`node_modules/${dep}`] = { version, cpu: [cpu], dev: true, license: "Apache-2.0", optional: true, os: [os] };
    added.push(`${dep}@${version}`);
  }
}
const [root, ...rest] = Object.entries(lock.packages);
lock.packages = Object.fromEntries([root, ...rest.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
writeFileSync("package-lock.json", JSON.stringify(lock, null, 2) + "\n");
console.log(added.length ? `added ${added.join(", ")}` : "lockfile already complete");
