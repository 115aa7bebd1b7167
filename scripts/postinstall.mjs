// `npm ci` / `npm install` in a checkout: generates src/gen/ from proto/ and builds the web UI.
// Installed as a package (`npm install kiln`), the tarball already carries src/gen/ (made by
// `prepack`) and the tools to make it are dev dependencies that are not there: nothing to do.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
if (!existsSync(join(root, "node_modules", ".bin", "buf"))) {
  if (!existsSync(join(root, "src", "gen"))) throw new Error("src/gen/ is missing and buf is not installed: run `npm ci` in a checkout");
  process.exit(0);
}
for (const script of ["scripts/generate.mjs", "ui/build.mjs"]) execFileSync(process.execPath, [join(root, script)], { cwd: root, stdio: "inherit" });
