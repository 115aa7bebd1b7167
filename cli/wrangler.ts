// The worker as a local process: `wrangler dev` in its own process group, so stopping it also
// stops the workerd processes it starts (no orphans holding ports and state).
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { processesInGroup } from "./proc.ts";

/** The repository root: wrangler.toml lives here and wrangler runs from here. */
export const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = `${ROOT}node_modules/.bin`;
const SETPRIV = "/usr/bin/setpriv";

export interface WranglerOptions {
  port: number;
  persistTo: string;
  /** Extra worker vars (`--var KEY:VALUE`), e.g. API_KEYS. */
  vars?: Record<string, string>;
  /** Devtools port; give each concurrent instance its own (wrangler defaults to 9229). */
  inspectorPort?: number;
  /** Prefix of wrangler's output lines, which go to stderr. */
  label: string;
}

export interface WranglerProcess {
  url: string;
  pid: number;
  /** Settles with the exit code when wrangler exits, for whatever reason. */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** The environment wrangler runs in: Node 22 from node_modules, nothing that needs the network. */
const wranglerEnv = () => ({
  ...process.env,
  // wrangler's shebang is `env node`: Node 22 from node_modules, not an older system node.
  PATH: `${BIN}:${process.env.PATH ?? ""}`,
  CLOUDFLARE_CF_FETCH_ENABLED: "false", // skips a network lookup that can stall startup offline
  WRANGLER_SEND_METRICS: "false",
  CI: "true", // no interactive prompts or hotkeys
});

/**
 * The D1 schema (migrations/) applied to the local database under `persistTo`, as
 * `wrangler d1 migrations apply --remote` does for a deployment; already-applied ones are skipped.
 */
export async function applyLocalMigrations(persistTo: string): Promise<void> {
  try {
    await promisify(execFile)(`${BIN}/wrangler`, ["d1", "migrations", "apply", "INDEX", "--local", "--persist-to", persistTo], { cwd: ROOT, env: wranglerEnv() });
  } catch (e) {
    const out = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`applying the D1 migrations (migrations/) to ${persistTo} failed: ${String(out.stderr || out.stdout || out.message).trim()}`);
  }
}

/** `wrangler dev`, with the local D1 schema brought up to date first. */
export async function spawnWrangler(o: WranglerOptions): Promise<WranglerProcess> {
  await applyLocalMigrations(o.persistTo);
  const args = ["dev", "--ip", "127.0.0.1", "--port", String(o.port), "--persist-to", o.persistTo, "--log-level", "warn"];
  if (o.inspectorPort !== undefined) args.push("--inspector-port", String(o.inspectorPort));
  for (const [key, value] of Object.entries(o.vars ?? {})) args.push(`--var=${key}:${value}`);
  // With util-linux's setpriv, wrangler gets SIGTERM if this process dies in any way, even
  // SIGKILLed (a killed test runner): the one case the exit hook below cannot cover.
  const argv = [...(existsSync(SETPRIV) ? [SETPRIV, "--pdeathsig", "SIGTERM", "--"] : []), `${BIN}/wrangler`, ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: ROOT,
    detached: true, // its own process group: see stop()
    stdio: ["ignore", "pipe", "pipe"],
    env: wranglerEnv(),
  });
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on("line", (line) => process.stderr.write(`[${o.label}] ${line}\n`));
  }
  const pgid = child.pid!;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let running = true;
  void exited.then(() => (running = false));
  // If this process ends without stop() (an uncaught error, a second Ctrl-C), take workerd along.
  const killOnExit = () => signalGroup(pgid, "SIGKILL");
  process.on("exit", killOnExit);

  return {
    url: `http://127.0.0.1:${o.port}`,
    pid: pgid,
    exited,
    async stop() {
      if (running) {
        signalGroup(pgid, "SIGTERM");
        const force = setTimeout(() => signalGroup(pgid, "SIGKILL"), 5000);
        await exited;
        clearTimeout(force);
      }
      // wrangler can exit before the workerd processes it started have.
      if (!(await groupGone(pgid, 3000))) signalGroup(pgid, "SIGKILL");
      process.off("exit", killOnExit);
    },
  };
}

function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false; // ESRCH: nobody left in the group
  }
}

async function groupGone(pgid: number, timeoutMs: number): Promise<boolean> {
  for (const end = Date.now() + timeoutMs; Date.now() < end; await sleep(50)) {
    if (processesInGroup(pgid).length === 0) return true;
  }
  return false;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Kiln's /healthz answer: JSON with a boolean "ok" (true, or false with the reason). */
function isHealthz(text: string): boolean {
  try {
    return typeof (JSON.parse(text) as { ok?: unknown }).ok === "boolean";
  } catch {
    return false;
  }
}

/**
 * Waits until the worker answers /healthz (wrangler's port refuses connections until then); fails
 * early if wrangler exits, or after `timeoutMs`, naming whatever else answered meanwhile.
 */
export async function waitForWorker(w: WranglerProcess, timeoutMs = 60_000): Promise<void> {
  let exitCode: number | null | undefined;
  void w.exited.then((code) => (exitCode = code));
  let other = "";
  for (const end = Date.now() + timeoutMs; ; await sleep(100)) {
    if (exitCode !== undefined) throw new Error(`wrangler exited (code ${exitCode}) before the worker answered`);
    try {
      // Kiln's own answer ({"ok": ...}, 200 or 503), not just any: something else on the port
      // (a process that took it first) must not pass for the worker.
      const res = await fetch(`${w.url}/healthz`, { signal: AbortSignal.timeout(2000) });
      const text = await res.text();
      if (isHealthz(text)) return;
      other = `HTTP ${res.status} ${JSON.stringify(text.slice(0, 80))}`;
    } catch {
      // not listening yet
    }
    if (Date.now() > end) {
      throw new Error(other ? `something other than the worker answers on ${w.url} (/healthz: ${other})` : `the worker did not answer on ${w.url} within ${timeoutMs / 1000} s`);
    }
  }
}
