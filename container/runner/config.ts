// Runner configuration: defaults, environment variables (KILN_RUNNER_*) and command-line flags.
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

export interface RunnerOptions {
  /** Names this runner in /v1/status and in ExecutedActionMetadata.worker (`{hostname}/{id}`). */
  id: string;
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Actions run at once; one more is refused with 503. */
  concurrency: number;
  /** Each action gets a fresh directory under here, removed afterwards. */
  workDir: string;
  /** Input files by digest, hardlinked into work directories. */
  cacheDir: string;
  /** The file cache evicts least recently used files beyond this many bytes. */
  cacheBytes: number;
  /** CAS requests in flight at once, across all actions. */
  transfers: number;
  /** Time between SIGTERM and SIGKILL when an action times out or is cancelled. */
  killGraceMs: number;
  /** Platform properties offered (a value may list alternatives separated by `|`). */
  properties: Record<string, string>;
}

const isaOf: Record<string, string> = { x64: "x86-64", arm64: "arm-a64", ia32: "x86-32", arm: "arm-a32", riscv64: "riscv64" };

export function defaultProperties(): Record<string, string> {
  return { OSFamily: os.platform() === "darwin" ? "macos" : os.platform(), ISA: isaOf[os.arch()] ?? os.arch() };
}

/** `k=v,k=v` over the defaults; `k=` removes a default. */
export function parseProperties(spec: string | undefined, base = defaultProperties()): Record<string, string> {
  const out = { ...base };
  for (const item of (spec ?? "").split(",")) {
    if (!item.trim()) continue;
    const eq = item.indexOf("=");
    if (eq <= 0) throw new Error(`platform property ${JSON.stringify(item)} is not name=value`);
    const name = item.slice(0, eq).trim();
    const value = item.slice(eq + 1).trim();
    if (value) out[name] = value;
    else delete out[name];
  }
  return out;
}

const GiB = 1024 ** 3;

export function defaultOptions(): RunnerOptions {
  const base = path.join(os.tmpdir(), "kiln-runner");
  return {
    id: randomBytes(4).toString("hex"),
    host: "127.0.0.1",
    port: 8981,
    concurrency: os.availableParallelism(),
    workDir: path.join(base, "work"),
    cacheDir: path.join(base, "cache"),
    cacheBytes: 2 * GiB,
    transfers: 32,
    killGraceMs: 5000,
    properties: defaultProperties(),
  };
}

function positiveInt(v: string | undefined, what: string): number | undefined {
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what}: ${JSON.stringify(v)} is not a non-negative integer`);
  return n;
}

/** Options from flags, then KILN_RUNNER_* variables, then defaults. */
export function optionsFrom(argv: string[], env: NodeJS.ProcessEnv): RunnerOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      id: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      concurrency: { type: "string" },
      "work-dir": { type: "string" },
      "cache-dir": { type: "string" },
      "cache-bytes": { type: "string" },
      transfers: { type: "string" },
      "kill-grace-ms": { type: "string" },
      properties: { type: "string" },
    },
    strict: true,
  });
  const d = defaultOptions();
  const pick = (flag: string | undefined, name: string) => flag ?? env[`KILN_RUNNER_${name}`];
  return {
    id: pick(values.id, "ID") || d.id,
    host: pick(values.host, "HOST") || d.host,
    port: positiveInt(pick(values.port, "PORT"), "port") ?? d.port,
    concurrency: Math.max(1, positiveInt(pick(values.concurrency, "CONCURRENCY"), "concurrency") ?? d.concurrency),
    workDir: pick(values["work-dir"], "WORK_DIR") || d.workDir,
    cacheDir: pick(values["cache-dir"], "CACHE_DIR") || d.cacheDir,
    cacheBytes: positiveInt(pick(values["cache-bytes"], "CACHE_BYTES"), "cache bytes") ?? d.cacheBytes,
    transfers: Math.max(1, positiveInt(pick(values.transfers, "TRANSFERS"), "transfers") ?? d.transfers),
    killGraceMs: positiveInt(pick(values["kill-grace-ms"], "KILL_GRACE_MS"), "kill grace") ?? d.killGraceMs,
    properties: parseProperties(pick(values.properties, "PROPERTIES")),
  };
}
