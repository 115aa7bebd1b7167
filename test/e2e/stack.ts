// The real stack for e2e tests: `wrangler dev` (the worker in local workerd, with fresh state) and
// the native gRPC bridge in this process, on free ports, optionally action runners that connect out
// to the worker with a fresh runner key (in this process, or as `kiln runner` child processes),
// plus /proc helpers to measure the worker.
import { spawn } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBridge } from "../../cli/bridge.ts";
import { freePorts } from "../../cli/ports.ts";
import { processesInGroup, readProc } from "../../cli/proc.ts";
import { spawnWrangler, waitForWorker } from "../../cli/wrangler.ts";
import type { SandboxMode } from "../../container/runner/config.ts";
import { startRunner, type Runner } from "../../container/runner/runner.ts";
import { newRunnerKey, runnerKeysVar } from "../../cli/runner-keys.ts";

export interface StackOptions {
  /** Worker vars on top of wrangler.toml's, e.g. { API_KEYS: JSON.stringify([...]) }. */
  vars?: Record<string, string>;
  /** Persist state here (kept); default: a fresh temp dir, removed by stop(). */
  persistDir?: string;
  /** Start an action runner in this process, connected to the worker with the stack's runner key. */
  runner?: boolean | { slots?: number; sandbox?: SandboxMode };
}

export interface Stack {
  /** The worker's origin: Connect, gRPC-web, REST, HTTP cache, blobs. */
  httpUrl: string;
  httpPort: number;
  /** wrangler's inspector (DevTools protocol) for the worker: CPU profiles of what it serves. */
  inspectorPort: number;
  /** The bridge, as a grpc-js target: 127.0.0.1:PORT. */
  grpcTarget: string;
  grpcPort: number;
  /** The workerd processes serving the worker, for memory measurements. */
  workerPids(): number[];
  /** The runner key the worker accepts (RUNNER_KEYS), for more runners. */
  runnerKey: string;
  /** The in-process runner, when `runner` was asked for. */
  runner?: Runner;
  /** Starts `kiln runner` as a child process connected to this worker; stopped with the stack. */
  spawnRunner(o?: { id?: string; slots?: number; args?: string[] }): Promise<RunnerProcess>;
  /**
   * Stops the worker (wrangler and workerd) and starts it again on the same port with the same
   * persisted state: what an operator's restart or a crash looks like to clients and runners.
   */
  restartWorker(): Promise<void>;
  stop(): Promise<void>;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const [httpPort, inspectorPort] = await freePorts(2);
  const persistTo = opts.persistDir ?? (await mkdtemp(join(tmpdir(), "kiln-e2e-")));
  const removeState = () => (opts.persistDir ? Promise.resolve() : rm(persistTo, { recursive: true, force: true }));
  const runnerKey = newRunnerKey();
  const vars = {
    PUBLIC_URL: `http://127.0.0.1:${httpPort}`,
    RUNNER_KEYS: runnerKeysVar([{ name: "e2e", key: runnerKey }]),
    // No edge stands in front of a local worker: no body cap (and so no chunking) unless a test sets one.
    MAX_REQUEST_BODY_BYTES: "0",
    ...opts.vars,
  };
  let worker = await spawnWrangler({ port: httpPort, inspectorPort, persistTo, vars, label: `worker :${httpPort}` });
  let runner: Runner | undefined;
  const children: RunnerProcess[] = [];
  try {
    await waitForWorker(worker);
    const bridge = await startBridge({ upstream: worker.url, port: 0, log: (line) => console.error(`[bridge :${httpPort}] ${line}`) });
    if (opts.runner) {
      const o = typeof opts.runner === "object" ? opts.runner : {};
      runner = await startRunner({ url: worker.url, token: runnerKey, slots: o.slots, sandbox: o.sandbox, log: (line) => console.error(`[runner :${httpPort}] ${line}`) });
    }
    return {
      httpUrl: worker.url,
      httpPort: httpPort,
      inspectorPort,
      grpcTarget: `127.0.0.1:${bridge.port}`,
      grpcPort: bridge.port,
      // wrangler runs detached, so its pid is the process group of everything it starts.
      workerPids: () => processesInGroup(worker.pid, "workerd"),
      runnerKey,
      runner,
      async restartWorker() {
        await worker.stop();
        worker = await spawnWrangler({ port: httpPort, inspectorPort, persistTo, vars, label: `worker :${httpPort} (restarted)` });
        await waitForWorker(worker);
      },
      async spawnRunner(o = {}) {
        const child = await spawnRunnerProcess(worker.url, runnerKey, o);
        children.push(child);
        return child;
      },
      async stop() {
        await bridge.close();
        await runner?.close();
        for (const c of children) await c.stop().then(() => rm(c.dir, { recursive: true, force: true }));
        await worker.stop();
        await removeState();
      },
    };
  } catch (e) {
    await runner?.close();
    await worker.stop();
    await removeState();
    throw e;
  }
}

export interface RunnerProcess {
  pid: number;
  id: string;
  /** Its work directory and file cache. */
  dir: string;
  /** Everything it printed so far. */
  output(): string;
  exited: Promise<number | null>;
  /** SIGTERM and wait (a no-op once it has exited). */
  stop(): Promise<void>;
  /** SIGKILL: the runner dies mid-whatever (its actions' process groups are left behind). */
  kill9(): Promise<void>;
}

const ROOT = new URL("../../", import.meta.url).pathname;

/** `kiln runner` in a child process; resolves once it is connected to the pool. */
async function spawnRunnerProcess(url: string, token: string, o: { id?: string; slots?: number; args?: string[] }): Promise<RunnerProcess> {
  const id = o.id ?? `e2e-${Math.random().toString(16).slice(2, 8)}`;
  const dir = await mkdtemp(join(tmpdir(), `kiln-runner-${id}-`));
  await chmod(dir, 0o711); // a root runner's actions run as other uids and must reach their work dirs
  // Node itself, not the tsx wrapper: the pid is then the runner's own.
  const child = spawn(
    process.execPath,
    [
      ...["--import", "tsx", "cli/kiln.ts", "runner", "--url", url, "--token", token, "--id", id, "--slots", String(o.slots ?? 2)],
      // Its own work directory and file cache (an explicit --work-dir in args wins: it comes later).
      ...["--work-dir", join(dir, "work"), ...(o.args ?? [])],
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  const label = `[runner ${id}]`;
  const onData = (b: Buffer) => {
    out += b.toString();
    for (const line of b.toString().split("\n")) if (line) console.error(`${label} ${line}`);
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const started = await Promise.race([
    (async () => {
      while (!/ connected to /.test(out) && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
      return true;
    })(),
    exited.then(() => false),
  ]);
  if (!started) throw new Error(`kiln runner exited before connecting: ${out}`);
  return {
    pid: child.pid!,
    id,
    dir,
    output: () => out,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
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
