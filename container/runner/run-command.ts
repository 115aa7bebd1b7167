// Runs the action's process in its own process group with stdout and stderr going straight to
// files, enforces the timeout (SIGTERM to the group, SIGKILL after a grace period), and kills the
// group on cancellation and after the main process exits (no stray background processes survive).
import { spawn } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Identity, SpawnPlan } from "./sandbox.ts";

export interface RunSpec {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  stdoutPath: string;
  stderrPath: string;
  timeoutMs: number;
  killGraceMs: number;
  /** Aborting kills the process group (cancellation). */
  signal?: AbortSignal;
  /** The process that runs `program argv[1..]` (directly, or inside the sandbox). */
  launch: (program: string, argv: string[]) => SpawnPlan;
  /** Run as this uid/gid (the runner is root). */
  identity?: Identity;
}

export interface RunResult {
  exitCode: number;
  timedOut: boolean;
  cancelled: boolean;
  /** performance.now() at start and end, the clock the timeout is enforced with. */
  startedAt: number;
  completedAt: number;
}

async function isExecutableFile(p: string): Promise<boolean> {
  try {
    const st = await fs.stat(p);
    if (!st.isFile()) return false;
    await fs.access(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The program for arguments[0]: with a slash, relative to the working directory; without, looked
 * up in the Command's PATH (relative PATH entries against the working directory), or in the
 * runner's own PATH when the Command sets none. null if nothing is found.
 */
export async function resolveProgram(arg0: string, cwd: string, pathVar: string | undefined): Promise<string | null> {
  if (arg0.includes("/")) return path.resolve(cwd, arg0);
  for (const dir of (pathVar ?? process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":")) {
    const candidate = path.resolve(cwd, dir || ".", arg0);
    if (await isExecutableFile(candidate)) return candidate;
  }
  return null;
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals) {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

export async function runCommand(spec: RunSpec): Promise<RunResult> {
  const startedAt = performance.now();
  const done = (exitCode: number, extra: Partial<RunResult> = {}): RunResult => ({
    exitCode,
    timedOut: false,
    cancelled: false,
    startedAt,
    completedAt: performance.now(),
    ...extra,
  });
  const [stdout, stderr] = await Promise.all([fs.open(spec.stdoutPath, "w"), fs.open(spec.stderrPath, "w")]);
  const failToStart = async (code: number, message: string) => {
    await stderr.write(`kiln-runner: ${message}\n`);
    return done(code);
  };
  try {
    if (spec.signal?.aborted) return done(0, { cancelled: true });
    const program = await resolveProgram(spec.argv[0]!, spec.cwd, spec.env.PATH);
    if (!program) return await failToStart(127, `${spec.argv[0]}: command not found`);

    const launch = spec.launch(program, spec.argv);
    const child = spawn(launch.file, launch.args, {
      ...(launch.argv0 !== undefined ? { argv0: launch.argv0 } : {}),
      ...spec.identity,
      cwd: spec.cwd,
      env: spec.env,
      stdio: ["ignore", stdout.fd, stderr.fd],
      detached: true, // its own process group, so the whole group can be signalled
    });
    type Ended = { code: number | null; signal: NodeJS.Signals | null } | { error: NodeJS.ErrnoException };
    const ended = await new Promise<{ end: Ended; timedOut: boolean; cancelled: boolean }>((resolve) => {
      let timedOut = false;
      let cancelled = false;
      let grace: NodeJS.Timeout | undefined;
      const stop = () => {
        killGroup(child.pid, "SIGTERM");
        grace ??= setTimeout(() => killGroup(child.pid, "SIGKILL"), spec.killGraceMs);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        stop();
      }, spec.timeoutMs);
      const onAbort = () => {
        cancelled = true;
        stop();
      };
      spec.signal?.addEventListener("abort", onAbort, { once: true });
      const finish = (end: Ended) => {
        clearTimeout(timer);
        clearTimeout(grace);
        spec.signal?.removeEventListener("abort", onAbort);
        resolve({ end, timedOut, cancelled });
      };
      child.once("error", (error) => finish({ error }));
      child.once("exit", (code, signal) => {
        // Background processes the action left behind go with it.
        killGroup(child.pid, "SIGKILL");
        finish({ code, signal });
      });
    });
    const { end } = ended;
    if ("error" in end) {
      return await failToStart(end.error.code === "ENOENT" ? 127 : 126, `cannot run ${program}: ${end.error.message}`);
    }
    const exitCode = end.code ?? 128 + (end.signal ? (os.constants.signals[end.signal] ?? 0) : 0);
    return done(exitCode, { timedOut: ended.timedOut, cancelled: ended.cancelled });
  } finally {
    await Promise.all([stdout.close(), stderr.close()]);
  }
}
