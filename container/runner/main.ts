// The runner as a program: `tsx container/runner/main.ts [--port N] [--concurrency N] ...`
// (flags or KILN_RUNNER_* variables; see config.ts). Stops cleanly on SIGINT and SIGTERM.
import { optionsFrom } from "./config.ts";
import { startRunner } from "./server.ts";

const options = optionsFrom(process.argv.slice(2), process.env);
const runner = await startRunner({ ...options, log: (line) => console.log(`[kiln-runner] ${line}`) });
const props = Object.entries(options.properties).map(([k, v]) => `${k}=${v}`).join(",");
console.log(`[kiln-runner] ${runner.id} listening on ${runner.url} (capacity ${options.concurrency}, ${props})`);

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(1);
    stopping = true;
    runner.close().then(() => process.exit(0), () => process.exit(1));
  });
}
