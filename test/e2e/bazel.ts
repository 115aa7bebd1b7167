// Running Bazel 4.2.3 (Debian's bazel-bootstrap) from e2e tests: offline, one output base per
// run, and reading back what a run did (the process summary) and produced (output digests).
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, readFile, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";

/** The workspace under test/bazel: fan-out, fan-in, a tree artifact, a 5 MiB output and tests. */
export const WORKSPACE_DIR = new URL("../bazel/", import.meta.url).pathname;

// Debian installs the real client as bazel-4; /usr/bin/bazel is a version-picking wrapper.
const CANDIDATES = ["bazel-4", "bazel"];

let binary: string | null | undefined;

function bazelBinary(): string | null {
  binary ??= CANDIDATES.find((bin) => spawnSync(bin, ["--version"], { stdio: "ignore" }).status === 0) ?? null;
  return binary;
}

export function bazelAvailable(): boolean {
  return bazelBinary() !== null;
}

export interface BazelResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface BazelOptions {
  /** A fresh directory per cold/warm run; its parent also holds the shared output user root. */
  outputBase: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** Runs `bazel <args>` in `workspaceDir`; resolves with the exit code, never rejects on failure. */
export function runBazel(workspaceDir: string, args: string[], opts: BazelOptions): Promise<BazelResult> {
  const bin = bazelBinary();
  if (bin === null) throw new Error("bazel is not installed (apt-get install bazel-bootstrap)");
  // Startup options: the home rc could carry anything; keep the system rc, it sets the install base.
  const startup = [
    "--nohome_rc",
    `--output_user_root=${join(dirname(opts.outputBase), "user-root")}`,
    `--output_base=${opts.outputBase}`,
    "--host_jvm_args=-Xmx1g",
  ];
  const child = spawn(bin, [...startup, ...args], {
    cwd: workspaceDir,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on("data", (b: Buffer) => stdout.push(b));
  child.stderr.on("data", (b: Buffer) => stderr.push(b));
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 10 * 60_000);
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
      });
    });
  });
}

/** Stops the output base's server (a ~300 MiB JVM) and deletes the output base. */
export async function disposeOutputBase(workspaceDir: string, outputBase: string): Promise<void> {
  await runBazel(workspaceDir, ["shutdown"], { outputBase });
  // Bazel leaves outputs and their directories read-only; only root could delete them as is.
  spawnSync("chmod", ["-R", "u+w", outputBase], { stdio: "ignore" });
  await rm(outputBase, { recursive: true, force: true });
}

export interface ProcessSummary {
  total: number;
  remoteCacheHits: number;
  /** Bazel-internal bookkeeping (symlink trees, workspace status): never cached, never remote. */
  internal: number;
  /** Processes that actually ran: everything that is neither a cache hit nor internal. */
  executed: number;
  /** Every category as printed, e.g. { "remote cache hit": 28, internal: 7 }. */
  byKind: Record<string, number>;
}

/**
 * Parses Bazel's last process summary, printed on stderr by 4.2.3 as
 * `INFO: 35 processes: 7 internal, 28 linux-sandbox.` (cold),
 * `INFO: 35 processes: 28 remote cache hit, 7 internal.` (warm),
 * `INFO: 1 process: 1 internal.` or `INFO: 0 processes.`.
 * The total does not always equal the sum of the kinds (`INFO: 6 processes: 7 linux-sandbox.` was
 * observed), so compare kinds with each other, not with the total.
 */
export function parseProcessSummary(stderr: string): ProcessSummary {
  const lines = [...stderr.matchAll(/^INFO: (\d+) process(?:es)?(?:: (.*))?\.$/gm)];
  const last = lines.at(-1);
  if (!last) throw new Error(`no process summary in Bazel's output:\n${stderr.slice(-2000)}`);
  const byKind: Record<string, number> = {};
  for (const part of last[2]?.split(", ") ?? []) {
    const m = /^(\d+) (.+)$/.exec(part);
    if (!m) throw new Error(`unexpected process summary: ${last[0]}`);
    byKind[m[2]] = Number(m[1]);
  }
  const remoteCacheHits = byKind["remote cache hit"] ?? 0;
  const internal = byKind["internal"] ?? 0;
  const sum = Object.values(byKind).reduce((a, b) => a + b, 0);
  return { total: Number(last[1]), remoteCacheHits, internal, executed: sum - remoteCacheHits - internal, byKind };
}

/**
 * SHA-256 of every output file of `targets`, keyed by its path under the execution root (tree
 * artifacts are walked). `flags` should repeat the build's flags so the query reuses its analysis.
 */
export async function outputDigests(
  workspaceDir: string,
  targets: string[],
  opts: BazelOptions & { flags?: string[] },
): Promise<Record<string, string>> {
  const flags = opts.flags ?? [];
  const query = await runBazel(
    workspaceDir,
    ["cquery", ...flags, "--output=starlark", '--starlark:expr="\\n".join([f.path for f in target.files.to_list()])', ...targets],
    opts,
  );
  const info = await runBazel(workspaceDir, ["info", ...flags, "execution_root"], opts);
  if (query.code !== 0 || info.code !== 0) throw new Error(`bazel cquery/info failed:\n${query.stderr}${info.stderr}`);
  const execRoot = info.stdout.trim();
  const digests: Record<string, string> = {};
  const visit = async (path: string): Promise<void> => {
    const abs = join(execRoot, path);
    // stat, not lstat: a test's executable is a symlink to its source, which is its content.
    if ((await stat(abs)).isDirectory()) {
      for (const name of (await readdir(abs)).sort()) await visit(join(path, name));
    } else {
      digests[path] = createHash("sha256").update(await readFile(abs)).digest("hex");
    }
  };
  for (const path of query.stdout.split("\n").filter(Boolean)) await visit(path);
  return digests;
}
