// The real stack for e2e tests: `wrangler dev` (the worker in local workerd, with fresh state) and
// the native gRPC bridge in this process, on free ports, plus /proc helpers to measure the worker.
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBridge } from "../../cli/bridge.ts";
import { processesInGroup, readProc } from "../../cli/proc.ts";
import { spawnWrangler, waitForWorker } from "../../cli/wrangler.ts";
import { startRunner } from "../../container/runner/server.ts";

export interface StackOptions {
  /** Worker vars on top of wrangler.toml's, e.g. { API_KEYS: JSON.stringify([...]) }. */
  vars?: Record<string, string>;
  /** Persist state here (kept); default: a fresh temp dir, removed by stop(). */
  persistDir?: string;
  /** Start an action runner in this process and point the worker at it (RUNNER_URLS). */
  runner?: boolean | { concurrency?: number };
}

export interface Stack {
  /** The worker's origin: Connect, gRPC-web, REST, HTTP cache, blobs. */
  httpUrl: string;
  httpPort: number;
  /** The bridge, as a grpc-js target: 127.0.0.1:PORT. */
  grpcTarget: string;
  grpcPort: number;
  /** The workerd processes serving the worker, for memory measurements. */
  workerPids(): number[];
  /** The in-process runner's URL, when `runner` was asked for. */
  runnerUrl?: string;
  stop(): Promise<void>;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const [httpPort, inspectorPort] = await freePorts(2);
  const persistTo = opts.persistDir ?? (await mkdtemp(join(tmpdir(), "kiln-e2e-")));
  const removeState = () => (opts.persistDir ? Promise.resolve() : rm(persistTo, { recursive: true, force: true }));
  const runner = opts.runner
    ? await startRunner({ port: 0, concurrency: typeof opts.runner === "object" ? opts.runner.concurrency : undefined })
    : undefined;
  // Runners reach the CAS at PUBLIC_URL: this worker's port, not wrangler.toml's default.
  const vars = { PUBLIC_URL: `http://127.0.0.1:${httpPort}`, ...(runner ? { RUNNER_URLS: runner.url } : {}), ...opts.vars };
  const worker = spawnWrangler({ port: httpPort, inspectorPort, persistTo, vars, label: `worker :${httpPort}` });
  try {
    await waitForWorker(worker);
    const bridge = await startBridge({ upstream: worker.url, port: 0, log: (line) => console.error(`[bridge :${httpPort}] ${line}`) });
    return {
      httpUrl: worker.url,
      httpPort: httpPort,
      grpcTarget: `127.0.0.1:${bridge.port}`,
      grpcPort: bridge.port,
      // wrangler runs detached, so its pid is the process group of everything it starts.
      workerPids: () => processesInGroup(worker.pid, "workerd"),
      runnerUrl: runner?.url,
      async stop() {
        await bridge.close();
        await worker.stop();
        await runner?.close();
        await removeState();
      },
    };
  } catch (e) {
    await worker.stop();
    await runner?.close();
    await removeState();
    throw e;
  }
}

/** Ports free right now (held open together, so they differ). */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => s.once("error", reject).listen(0, "127.0.0.1", resolve));
    }
    return servers.map((s) => (s.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

/** Sum of the resident set sizes (VmRSS) of `pids`, in bytes; exited processes count 0. */
export function sampleRss(pids: number[]): number {
  let bytes = 0;
  for (const pid of pids) {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readProc(`/proc/${pid}/status`) ?? "")?.[1];
    if (kb) bytes += Number(kb) * 1024;
  }
  return bytes;
}

/**
 * Peak of sampleRss(pids()) while running, sampled every 100 ms: `const s = peakRss(stack.workerPids);
 * s.start(); ...; const peak = s.stop();`. pids is re-read each time, so restarted processes count.
 */
export function peakRss(pids: () => number[]) {
  let peak = 0;
  let timer: NodeJS.Timeout | undefined;
  const sample = () => (peak = Math.max(peak, sampleRss(pids())));
  return {
    start() {
      peak = 0;
      sample();
      timer = setInterval(sample, 100);
    },
    /** Stops sampling and returns the peak in bytes. */
    stop(): number {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

/**
 * Whether an external tool (bazel, chromium, ...) is there for the tests that need it. Missing in
 * CI: throws, so the run fails instead of passing with tests silently skipped. Missing elsewhere:
 * says so and returns false. Use at module level with skipIf:
 *
 *   const haveBazel = requireTool("bazel", bazelAvailable);
 *   describe.skipIf(!haveBazel)("Bazel", () => { ... });
 */
export function requireTool(name: string, check: () => boolean): boolean {
  let ok = false;
  try {
    ok = check();
  } catch {
    // a failing probe means the tool is not usable
  }
  if (ok) return true;
  const ci = process.env.CI ?? "";
  if (ci !== "" && ci !== "0" && ci.toLowerCase() !== "false") {
    throw new Error(`${name} is required in CI (CI=${ci}) but is not available`);
  }
  console.warn(`[e2e] ${name} is not available: skipping the tests that need it (in CI this is an error)`);
  return false;
}
