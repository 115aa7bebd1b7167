// The `kiln` command (run with tsx: `tsx cli/kiln.ts <command>`).
import { parseArgs } from "node:util";
import { startBridge } from "./bridge.ts";
import { dev } from "./dev.ts";
import { uploadBep } from "./upload-bep.ts";
import { RUNNER_USAGE, runnerMain } from "../container/runner/main.ts";

const USAGE = `usage:
  kiln dev                                   the worker (wrangler dev) and the gRPC bridge, on 127.0.0.1
                                             env: KILN_PORT (8787), KILN_GRPC_PORT (8980), KILN_STATE_DIR (.state)
  kiln bridge [--upstream URL] [--port N]    native gRPC (h2c) on 127.0.0.1:N (8980) -> the worker at URL
                                             (http://127.0.0.1:8787) as gRPC-web
                                             env: KILN_API_KEY, added to build events (Bazel sends no headers on BES)
                                             --chunk-above BYTES: blobs over it move as chunks (SplitBlob/SpliceBlob);
                                             default the worker's max_cas_blob_size_bytes, 0 never
  kiln upload-bep FILE [--upstream URL]      a --build_event_binary_file into Kiln's ResultStore (idempotent)
                                             env: KILN_API_KEY
  ${RUNNER_USAGE.replace(/^kiln /, "")}
                                             an action runner: connects out to the worker, listens on no port`;

async function bridge(args: string[]) {
  const { values } = parseArgs({
    args,
    options: {
      upstream: { type: "string", default: "http://127.0.0.1:8787" },
      port: { type: "string", default: "8980" },
      "chunk-above": { type: "string" },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${values.port} is not a port number`);
  const chunkAbove = values["chunk-above"] === undefined ? undefined : Number(values["chunk-above"]);
  if (chunkAbove !== undefined && !(Number.isSafeInteger(chunkAbove) && chunkAbove >= 0)) {
    throw new Error(`--chunk-above ${values["chunk-above"]} is not a size in bytes`);
  }
  const b = await startBridge({ upstream: values.upstream, port, besApiKey: process.env.KILN_API_KEY || undefined, chunkAboveBytes: chunkAbove });
  console.log(`kiln bridge: grpc://127.0.0.1:${b.port} -> ${values.upstream} (gRPC-web)`);
  const stop = () => void b.close().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

async function uploadBepCommand(args: string[]) {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { upstream: { type: "string", default: "http://127.0.0.1:8787" } } });
  if (positionals.length !== 1) throw new Error("needs one FILE (a --build_event_binary_file)");
  const upstream = values.upstream.replace(/\/$/, "");
  const r = await uploadBep(positionals[0]!, { upstream, apiKey: process.env.KILN_API_KEY || undefined });
  console.log(`kiln upload-bep: ${r.events} events -> invocations/${r.invocationId} (${upstream}/v2/invocations/${r.invocationId}?fields=*)`);
}

const [command, ...args] = process.argv.slice(2);
try {
  if (command === "dev" && args.length === 0) await dev();
  else if (command === "bridge") await bridge(args);
  else if (command === "upload-bep") await uploadBepCommand(args);
  else if (command === "runner") await runnerMain(args, process.env);
  else {
    console.error(USAGE);
    process.exitCode = 2;
  }
} catch (e) {
  console.error(`kiln ${command}: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
}
