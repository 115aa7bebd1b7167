// Builds the web UI (ui/src) into ui/dist, the Workers static-assets directory wrangler.toml names:
// ui/dist/index.html (served at / and at the app's routes) and ui/dist/ui/* (the bundle).
// Runs after code generation in `npm ci` (postinstall) and in `npm start`; `--watch` rebuilds.
import { build, context } from "esbuild";
import { cp, mkdir, rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const out = `${here}dist`;
const options = {
  entryPoints: [`${here}src/main.tsx`, `${here}src/style.css`],
  outdir: `${out}/ui`,
  bundle: true,
  format: "esm",
  splitting: true,
  minify: true,
  sourcemap: true,
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  logLevel: "warning",
  metafile: true,
};

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await cp(`${here}index.html`, `${out}/index.html`);
if (process.argv.includes("--watch")) {
  await (await context(options)).watch();
} else {
  const r = await build(options);
  const bytes = Object.entries(r.metafile.outputs).filter(([name]) => !name.endsWith(".map")).reduce((n, [, o]) => n + o.bytes, 0);
  console.log(`ui: built ui/dist (${Math.round(bytes / 1024)} KiB of scripts and styles, before compression)`);
}
