// Runner configuration: defaults, environment variables and command-line flags.
//   kiln runner --url URL --token KEY [--slots N] [--property k=v ...] [--work-dir DIR] ...
// Environment: KILN_URL, KILN_RUNNER_TOKEN, and KILN_RUNNER_{SLOTS,PROPERTIES,WORK_DIR,...}
// (PROPERTIES is `k=v,k=v`), so the container image needs no command line.
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

export interface Property {
  name: string;
  value: string;
}

/** What the sandbox may use; see sandbox.ts. "auto": bwrap where it works, else plain processes. */
export type SandboxMode = "auto" | "bwrap" | "none";

export interface RunnerOptions {
  /** The worker's base URL: the pool WebSocket, RunnerService and the CAS are all reached here. */
  url: string;
  /** The runner credential (one of the worker's RUNNER_KEYS). */
  token: string;
  /** Names this runner in Hello and in ExecutedActionMetadata.worker (`{hostname}/{id}`). */
  id: string;
  /** Actions run at once, across every pool shard. */
  slots: number;
  /** Platform properties offered; a name may repeat with different values. */
  properties: Property[];
  /** Each action gets a fresh directory under here, removed afterwards. */
  workDir: string;
  /** Input files by digest. Default: `{workDir}/../cache` (kept out of the work dir's subtree). */
  cacheDir: string;
  /** The file cache evicts least recently used files beyond this many bytes. */
  cacheBytes: number;
  /** CAS requests in flight at once, across all actions. */
  transfers: number;
  /** Time between SIGTERM and SIGKILL when an action times out or is cancelled. */
  killGraceMs: number;
  sandbox: SandboxMode;
  /** When the runner is root, slot i runs its actions as uid and gid `actionUid + i`. */
  actionUid: number;
  /** Input tree bounds, checked before staging: entries (files, directories, symlinks) and file bytes. */
  maxInputEntries: number;
  maxInputBytes: number;
}

const isaOf: Record<string, string> = { x64: "x86-64", arm64: "arm-a64", ia32: "x86-32", arm: "arm-a32", riscv64: "riscv64" };

export function defaultProperties(): Property[] {
  return [
    { name: "OSFamily", value: os.platform() === "darwin" ? "macos" : os.platform() },
    { name: "ISA", value: isaOf[os.arch()] ?? os.arch() },
  ];
}

/** `name=value` items over the defaults; `name=` removes every value of a default. */
export function parseProperties(items: string[], base = defaultProperties()): Property[] {
  let out = [...base];
  const replaced = new Set<string>();
  for (const item of items) {
    if (!item.trim()) continue;
    const eq = item.indexOf("=");
    if (eq <= 0) throw new Error(`platform property ${JSON.stringify(item)} is not name=value`);
    const name = item.slice(0, eq).trim();
    const value = item.slice(eq + 1).trim();
    // The first explicit value of a default name replaces the default; later ones add alternatives.
    if (!replaced.has(name)) (replaced.add(name), (out = out.filter((p) => p.name !== name)));
    if (value) out.push({ name, value });
  }
  return out;
}

const GiB = 1024 ** 3;

export function defaultOptions(): Omit<RunnerOptions, "url" | "token"> {
  const base = path.join(os.tmpdir(), "kiln-runner");
  return {
    id: randomBytes(4).toString("hex"),
    slots: os.availableParallelism(),
    properties: defaultProperties(),
    workDir: path.join(base, "work"),
    cacheDir: path.join(base, "cache"),
    cacheBytes: 2 * GiB,
    transfers: 32,
    killGraceMs: 5000,
    sandbox: "auto",
    actionUid: 61000,
    maxInputEntries: 1_000_000,
    maxInputBytes: 64 * GiB,
  };
}

function count(v: string | undefined, what: string): number | undefined {
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what}: ${JSON.stringify(v)} is not a non-negative integer`);
  return n;
}

export const RUNNER_FLAGS = `  --url URL            the Kiln worker (env KILN_URL)
  --token KEY          a runner key from the worker's RUNNER_KEYS (env KILN_RUNNER_TOKEN)
  --slots N            actions at once (env KILN_RUNNER_SLOTS; default: CPU count)
  --property k=v       platform property offered; repeatable (env KILN_RUNNER_PROPERTIES=k=v,k=v)
  --work-dir DIR       action work directories (env KILN_RUNNER_WORK_DIR)
  --cache-dir DIR      input file cache (env KILN_RUNNER_CACHE_DIR)
  --sandbox MODE       auto | bwrap | none (env KILN_RUNNER_SANDBOX; default auto)`;

/** Options from flags, then environment variables, then defaults. */
export function optionsFrom(argv: string[], env: NodeJS.ProcessEnv): RunnerOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: "string" },
      token: { type: "string" },
      id: { type: "string" },
      slots: { type: "string" },
      property: { type: "string", multiple: true },
      "work-dir": { type: "string" },
      "cache-dir": { type: "string" },
      "cache-bytes": { type: "string" },
      transfers: { type: "string" },
      "kill-grace-ms": { type: "string" },
      sandbox: { type: "string" },
      "action-uid": { type: "string" },
      "max-input-entries": { type: "string" },
      "max-input-bytes": { type: "string" },
    },
    strict: true,
  });
  const d = defaultOptions();
  const pick = (flag: string | undefined, name: string) => flag ?? env[`KILN_RUNNER_${name}`];
  const url = values.url ?? env.KILN_URL;
  const token = values.token ?? env.KILN_RUNNER_TOKEN;
  if (!url) throw new Error("--url (or KILN_URL) is required: the Kiln worker to connect to");
  if (!token) throw new Error("--token (or KILN_RUNNER_TOKEN) is required: a runner key from the worker's RUNNER_KEYS");
  const sandbox = pick(values.sandbox, "SANDBOX") || d.sandbox;
  if (sandbox !== "auto" && sandbox !== "bwrap" && sandbox !== "none") throw new Error(`--sandbox ${sandbox}: expected auto, bwrap or none`);
  const workDir = pick(values["work-dir"], "WORK_DIR");
  return {
    url,
    token,
    id: pick(values.id, "ID") || d.id,
    slots: Math.max(1, count(pick(values.slots, "SLOTS"), "slots") ?? d.slots),
    properties: parseProperties(values.property ?? (env.KILN_RUNNER_PROPERTIES ?? "").split(",")),
    workDir: workDir || d.workDir,
    cacheDir: pick(values["cache-dir"], "CACHE_DIR") || (workDir ? path.join(workDir, "..", path.basename(workDir) + "-cache") : d.cacheDir),
    cacheBytes: count(pick(values["cache-bytes"], "CACHE_BYTES"), "cache bytes") ?? d.cacheBytes,
    transfers: Math.max(1, count(pick(values.transfers, "TRANSFERS"), "transfers") ?? d.transfers),
    killGraceMs: count(pick(values["kill-grace-ms"], "KILL_GRACE_MS"), "kill grace") ?? d.killGraceMs,
    sandbox,
    actionUid: count(pick(values["action-uid"], "ACTION_UID"), "action uid") ?? d.actionUid,
    maxInputEntries: count(pick(values["max-input-entries"], "MAX_INPUT_ENTRIES"), "max input entries") ?? d.maxInputEntries,
    maxInputBytes: count(pick(values["max-input-bytes"], "MAX_INPUT_BYTES"), "max input bytes") ?? d.maxInputBytes,
  };
}
