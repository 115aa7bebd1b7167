// `kiln dev` (`npm start`): the worker under wrangler dev, the native gRPC bridge in front of it and
// a local action runner that connects out to it (with a fresh runner key), everything on
// 127.0.0.1, state persisted across runs; Ctrl-C stops it all.
import { startBridge, type Bridge } from "./bridge.ts";
import { assertPortFree } from "./ports.ts";
import { spawnWrangler, waitForWorker } from "./wrangler.ts";
import { startRunner, type Runner } from "../container/runner/runner.ts";
import { newRunnerKey, runnerKeysVar } from "./runner-keys.ts";

export async function dev(): Promise<void> {
  const httpPort = Number(process.env.KILN_PORT ?? 8787);
  const grpcPort = Number(process.env.KILN_GRPC_PORT ?? 8980);
  const stateDir = process.env.KILN_STATE_DIR ?? ".state";
  // Checked first: the readiness probe below cannot tell our worker from another server.
  await assertPortFree(httpPort, "KILN_PORT (HTTP)");
  await assertPortFree(grpcPort, "KILN_GRPC_PORT (native gRPC)");

  // A runner key for this session only: the local runner (and any other machine given the
  // command line printed below) authenticates with it.
  const runnerKey = newRunnerKey();
  const worker = await spawnWrangler({
    port: httpPort,
    persistTo: stateDir,
    label: "worker",
    vars: { RUNNER_KEYS: runnerKeysVar([{ name: "local", key: runnerKey }]) },
  });
  let bridge: Bridge | undefined;
  let runner: Runner | undefined;
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await bridge?.close();
    // The runner first: it stops taking work while the worker is still there to see it go.
    await runner?.close();
    await worker.stop();
    process.exit(code);
  };
  process.once("SIGINT", () => void stop(0));
  process.once("SIGTERM", () => void stop(0));
  void worker.exited.then((code) => {
    if (stopping) return;
    console.error(`kiln dev: wrangler exited (code ${code})`);
    void stop(code || 1);
  });

  try {
    await waitForWorker(worker);
    bridge = await startBridge({ upstream: worker.url, port: grpcPort });
    // The local action runner: the same program the deployed containers run, dialing the worker.
    runner = await startRunner({ url: worker.url, token: runnerKey, log: (line) => console.error(`[runner] ${line}`) });
  } catch (e) {
    console.error(`kiln dev: ${e instanceof Error ? e.message : String(e)}`);
    return stop(1);
  }
  const grpc = `grpc://127.0.0.1:${bridge.port}`;
  console.log(
    [
      "",
      "Kiln is running.",
      `  web UI (invocations, actions, operations, CAS):    ${worker.url}/`,
      `  HTTP (Connect, gRPC-web, REST, Bazel HTTP cache): ${worker.url}`,
      `  native gRPC (bridge):                              ${grpc}`,
      `  action runner:                                     ${runner.id} (connected out, sandbox ${runner.sandbox})`,
      `  ${await authMode(worker.url)}`,
      "  state:                                             " + stateDir,
      ".bazelrc:",
      `  build --remote_cache=${grpc}`,
      `  build --remote_instance_name=main`,
      `  build --bes_backend=${grpc}`,
      `  build --bes_results_url=${worker.url}/invocations/`,
      `  # or the HTTP cache: build --remote_cache=${worker.url}/cache/main`,
      `  # remote execution: build --remote_executor=${grpc} --spawn_strategy=remote`,
      "more runners (on any machine that can reach the worker; this key lasts until Ctrl-C):",
      `  npx kiln runner --url ${worker.url} --token ${runnerKey}`,
      "Ctrl-C stops it.",
      "",
    ].join("\n"),
  );
}

/** What /healthz says about API keys: open (anyone may read and write) or keys required. */
async function authMode(url: string): Promise<string> {
  try {
    const health = (await (await fetch(`${url}/healthz`)).json()) as { auth?: string };
    if (health.auth === "open") return "auth: open (no API_KEYS set: anyone who can reach these ports may read and write)";
    if (health.auth === "keys") return "auth: API keys required (Authorization: Bearer KEY; Bazel: --remote_header=Authorization=Bearer KEY)";
  } catch {
    // an older worker without /healthz: say so below
  }
  return "auth: unknown (the worker's GET /healthz did not say)";
}
