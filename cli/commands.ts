// The `kiln` commands, each with its own --help: one entry of COMMANDS per command (cli/kiln.ts
// lists and runs them). A new command is a new entry.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { startBridge } from "./bridge.ts";
import { checkUpstream, DEFAULT_UPSTREAM, describeListenFailure, describeUpstreamFailure, portNumber, upstreamUrl, UsageError, type Command } from "./command.ts";
import { ADMIN_USAGE, adminMain } from "./admin.ts";
import { dev } from "./dev.ts";
import { uploadBep } from "./upload-bep.ts";
import { RUNNER_USAGE, runnerMain } from "../container/runner/main.ts";

/** parseArgs with its complaints (an unknown flag, a missing value) as usage errors. */
function parse<T extends ParseArgsConfig>(config: T) {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

const bridge: Command = {
  summary: "native gRPC (h2c) in front of a worker, for Bazel's grpc:// flags",
  help: `usage: kiln bridge [--upstream URL] [--host HOST] [--port N] [--chunk-above BYTES]

Serves native gRPC (HTTP/2 cleartext) and forwards every call to the worker as gRPC-web: what
Cloudflare's edge does for a deployed Kiln, for a worker reached without it.

  --upstream URL   the Kiln worker (default ${DEFAULT_UPSTREAM})
  --host HOST      the address to listen on (default 127.0.0.1; 0.0.0.0 or :: for every
                   interface, e.g. for Bazel in Docker on this host: then anyone who can reach
                   this port reaches the worker with the keys they send)
  --port N         the port to listen on (default 8980; 0 picks a free one)
  --chunk-above BYTES
                   blobs larger than this move as chunks (SplitBlob/SpliceBlob), so no request
                   exceeds the edge's body cap (default: the worker's max_cas_blob_size_bytes;
                   0: never)

environment:
  KILN_API_KEY     added to build events, which Bazel 4.2.3 sends without headers on
                   --bes_backend; checked against the worker at start

The worker is asked for GET /healthz at start: a wrong --upstream or a refused KILN_API_KEY
ends the bridge with the reason.`,
  async run(args) {
    const { values } = parse({
      args,
      options: {
        upstream: { type: "string", default: DEFAULT_UPSTREAM },
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "8980" },
        "chunk-above": { type: "string" },
      },
    });
    const upstream = upstreamUrl(values.upstream);
    const port = portNumber(values.port);
    const chunkAboveBytes = values["chunk-above"] === undefined ? undefined : Number(values["chunk-above"]);
    if (chunkAboveBytes !== undefined && !(Number.isSafeInteger(chunkAboveBytes) && chunkAboveBytes >= 0)) {
      throw new UsageError(`--chunk-above ${values["chunk-above"]} is not a size in bytes`);
    }
    const apiKey = process.env.KILN_API_KEY || undefined;
    await checkUpstream(upstream, apiKey);
    const b = await startBridge({ upstream, host: values.host, port, besApiKey: apiKey, chunkAboveBytes }).catch((e: unknown) => {
      throw new Error(describeListenFailure(e, values.host, port));
    });
    const shown = values.host.includes(":") ? `[${values.host}]` : values.host;
    console.log(`kiln bridge: grpc://${shown}:${b.port} -> ${upstream} (gRPC-web)`);
    const stop = () => void b.close().then(() => process.exit(0));
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  },
};

const uploadBepCommand: Command = {
  summary: "a --build_event_binary_file into Kiln's ResultStore (idempotent)",
  help: `usage: kiln upload-bep FILE [--upstream URL]

Uploads a finished build's --build_event_binary_file as the build event stream Bazel would have
sent. Uploading the same file again (or after a failure) resumes it: nothing is doubled.

  --upstream URL   the Kiln worker (default ${DEFAULT_UPSTREAM})

environment:
  KILN_API_KEY     the API key to upload with (a read-write key where the worker has API_KEYS)`,
  async run(args) {
    const { values, positionals } = parse({ args, allowPositionals: true, options: { upstream: { type: "string", default: DEFAULT_UPSTREAM } } });
    if (positionals.length !== 1) throw new UsageError("needs one FILE (a --build_event_binary_file)");
    const upstream = upstreamUrl(values.upstream);
    const r = await uploadBep(positionals[0]!, { upstream, apiKey: process.env.KILN_API_KEY || undefined }).catch((e: unknown) => {
      throw new Error(describeUpstreamFailure(e, upstream));
    });
    console.log(`kiln upload-bep: ${r.events} events -> invocations/${r.invocationId} (${upstream}/v2/invocations/${r.invocationId}?fields=*)`);
  },
};

const devCommand: Command = {
  summary: "the worker (wrangler dev), the gRPC bridge and a runner on 127.0.0.1 (npm start)",
  help: `usage: kiln dev

Runs Kiln on this machine from a checkout: the worker under wrangler dev (its D1 schema migrated
first), the native gRPC bridge in front of it and an action runner dialing it, all on 127.0.0.1,
with state kept across runs. Ctrl-C stops everything.

environment:
  KILN_PORT        the worker's HTTP port (default 8787)
  KILN_GRPC_PORT   the bridge's native gRPC port (default 8980)
  KILN_STATE_DIR   where state is kept (default .state)`,
  async run(args) {
    parse({ args, options: {} });
    await dev();
  },
};

const runner: Command = {
  summary: "an action runner: connects out to the worker, listens on no port",
  help: `usage: ${RUNNER_USAGE}`,
  run: (args) => runnerMain(args, process.env),
};

const admin: Command = {
  summary: "the operator's calls on the CAS: stats, evict, reconcile (an admin key)",
  help: `usage: ${ADMIN_USAGE}`,
  run: adminMain,
};

/** Every command, in the order `kiln --help` lists them. */
export const COMMANDS: Record<string, Command> = {
  dev: devCommand,
  bridge,
  "upload-bep": uploadBepCommand,
  runner,
  admin,
};
