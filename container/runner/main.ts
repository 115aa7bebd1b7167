// `kiln runner --url URL --token KEY ...` (cli/kiln.ts), and the container image's entry point
// (`node runner.mjs runner`, bundled from this file). Stops cleanly on SIGINT and SIGTERM.
import { fileURLToPath } from "node:url";
import { optionsFrom, RUNNER_FLAGS } from "./config.ts";
import { startRunner } from "./runner.ts";

export const RUNNER_USAGE = `kiln runner --url URL --token KEY [--slots N] [--property k=v ...] [--work-dir DIR]\n${RUNNER_FLAGS}`;

export async function runnerMain(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const options = optionsFrom(argv, env);
  const log = (line: string) => console.log(`[kiln-runner] ${line}`);
  const runner = await startRunner({ ...options, log });
  const props = options.properties.map((p) => `${p.name}=${p.value}`).join(",");
  log(`${runner.id}: ${options.slots} slot(s), sandbox ${runner.sandbox}, offering ${props}`);
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(1);
      stopping = true;
      runner.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    });
  }
}

// Run directly (the container bundle): `runner.mjs runner [flags]`.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [command, ...args] = process.argv.slice(2);
  if (command !== "runner") {
    console.error(`usage: ${RUNNER_USAGE}`);
    process.exit(2);
  }
  await runnerMain(args, process.env).catch((e: unknown) => {
    console.error(`kiln runner: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
