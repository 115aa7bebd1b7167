// An action's private directory: the input root (where the command runs) and, beside it so that
// no output path can reach them, the stdout and stderr files (opened by the runner and handed to
// the action as descriptors, so the action's uid needs no access to them).
import fs from "node:fs/promises";
import path from "node:path";

export interface Workspace {
  dir: string;
  inputRoot: string;
  stdoutPath: string;
  stderrPath: string;
}

export async function createWorkspace(base: string): Promise<Workspace> {
  await fs.mkdir(base, { recursive: true });
  const dir = await fs.mkdtemp(path.join(base, "action-"));
  // Traversable, not listable: an action running as another uid reaches its own input root only.
  await fs.chmod(dir, 0o711);
  const inputRoot = path.join(dir, "root");
  await fs.mkdir(inputRoot);
  return { dir, inputRoot, stdoutPath: path.join(dir, "stdout"), stderrPath: path.join(dir, "stderr") };
}

/** Makes every directory under `dir` writable again (an action may have chmod-ed some). */
async function unlock(dir: string): Promise<void> {
  await fs.chmod(dir, 0o700).catch(() => {});
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  await Promise.all(entries.filter((e) => e.isDirectory()).map((e) => unlock(path.join(dir, e.name))));
}

export async function removeWorkspace(ws: Workspace): Promise<void> {
  try {
    await fs.rm(ws.dir, { recursive: true, force: true });
  } catch {
    await unlock(ws.dir);
    await fs.rm(ws.dir, { recursive: true, force: true });
  }
}
