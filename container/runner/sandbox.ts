// How actions are kept apart, decided once at start:
// - Runner is root: slot i runs its actions as uid/gid `actionUid + i` (no passwd entry needed).
//   That uid owns only its own input root's directories; staged input files are hardlinks of
//   root-owned read-only cache files, so the action can neither write nor chmod them, nor touch the
//   cache or another slot's work directory.
// - Runner is not root: every action runs as the runner's uid, so inputs are staged as copies
//   (file-cache.ts); what one action does to its copies cannot reach the next action.
// - bwrap (Debian `bubblewrap`), where it works: each action also gets its own mount, pid, ipc and
//   uts namespaces: the whole filesystem read-only, a private /tmp, the runner's work and cache
//   directories hidden, its own input root bound writable, and no network unless the action's
//   platform asks for `network=on`.
// Not isolated: CPU, memory and disk use (no cgroup limits), and without bwrap reads of the rest
// of the filesystem, including other actions' outputs when the runner is not root.
import { execFile } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import type { SandboxMode } from "./config.ts";

const run = promisify(execFile);

/** The platform property that grants network access (`network=on`); anything else means none. */
export const NETWORK_PROPERTY = "network";

export interface Identity {
  uid: number;
  gid: number;
}

export interface SpawnPlan {
  file: string;
  args: string[];
  /** argv[0] as the action sees it, where the sandbox lets us set it. */
  argv0?: string;
}

export interface Sandbox {
  kind: "bwrap" | "none";
  /** The uid/gid that slot `slot` runs as; undefined: the runner's own. */
  identity(slot: number): Identity | undefined;
  /** The process to spawn for `program args` with `inputRoot` as the only writable directory. */
  plan(program: string, argv: string[], at: { inputRoot: string; cwd: string; network: boolean }): SpawnPlan;
}

export interface SandboxOptions {
  mode: SandboxMode;
  actionUid: number;
  /** Hidden inside bwrap: the runner's work and cache directories. */
  hide: string[];
}

const isRoot = () => process.getuid?.() === 0;

/** bwrap's absolute path: actions set their own PATH, which must not decide what runs them. */
async function findBwrap(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":")) {
    if (!dir) continue;
    const candidate = path.join(dir, "bwrap");
    if (await access(candidate, fsConstants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

async function bwrapWorks(bwrap: string, identity: Identity | undefined): Promise<boolean> {
  try {
    await run(bwrap, ["--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--", "/bin/true"], {
      ...identity,
      timeout: 10_000,
    });
    return true;
  } catch {
    return false;
  }
}

export async function createSandbox(o: SandboxOptions): Promise<Sandbox> {
  const identity = (slot: number): Identity | undefined => (isRoot() ? { uid: o.actionUid + slot, gid: o.actionUid + slot } : undefined);
  const found = o.mode === "none" ? undefined : await findBwrap();
  const bwrap = found && (await bwrapWorks(found, identity(0))) ? found : undefined;
  if (o.mode === "bwrap" && !bwrap) throw new Error("--sandbox bwrap: bwrap is missing or cannot create namespaces here");
  if (!bwrap) {
    return { kind: "none", identity, plan: (program, argv) => ({ file: program, args: argv.slice(1), argv0: argv[0] }) };
  }
  return {
    kind: "bwrap",
    identity,
    plan(program, argv, at) {
      const args = ["--die-with-parent", "--unshare-all", ...(at.network ? ["--share-net"] : [])];
      args.push("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp");
      const hidden = o.hide.map((dir) => path.resolve(dir));
      for (const dir of hidden) args.push("--tmpfs", dir);
      args.push("--bind", at.inputRoot, at.inputRoot);
      // Empty and read-only (the input root, mounted on its own, stays writable).
      for (const dir of hidden) args.push("--remount-ro", dir);
      args.push("--chdir", at.cwd, "--", program, ...argv.slice(1));
      return { file: bwrap, args };
    },
  };
}
