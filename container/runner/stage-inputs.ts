// The input root on disk: fetch the Directory tree from the CAS, then lay it out in the work
// directory (directories, files with their executable bit from the file cache, symlinks), and
// create the parent directories of the outputs.
import { fromBinary } from "@bufbuild/protobuf";
import fs from "node:fs/promises";
import path from "node:path";
import { DirectorySchema, type Directory } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { BlobNotFoundError, type CasClient } from "./cas-client.ts";
import type { CommandPlan } from "./command.ts";
import { blobKey, isEmpty, missingSubject, parseDigest, type BlobDigest } from "./digest.ts";
import { errnoOf, invalidArgument, RunnerError } from "./errors.ts";
import type { FileCache } from "./file-cache.ts";
import { forEachLimit } from "./limit.ts";

/** Local file operations in flight per action (network transfers are bounded by the CAS limiter). */
const STAGE_CONCURRENCY = 64;

function checkName(name: string, where: string) {
  if (!name || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw invalidArgument(`input directory ${where} has an entry named ${JSON.stringify(name)}`);
  }
}

function checkDirectory(dir: Directory, where: string) {
  const names = new Set<string>();
  for (const n of [...dir.files, ...dir.directories, ...dir.symlinks]) {
    checkName(n.name, where);
    if (names.has(n.name)) throw invalidArgument(`input directory ${where} has two entries named ${JSON.stringify(n.name)}`);
    names.add(n.name);
  }
  for (const s of dir.symlinks) {
    if (!s.target || s.target.includes("\0")) throw invalidArgument(`input symlink ${s.name} in ${where} has an invalid target`);
  }
}

/** Every Directory of the tree under `root`, by blobKey; FAILED_PRECONDITION lists any that are missing. */
export async function fetchInputTree(cas: CasClient, root: BlobDigest, signal?: AbortSignal): Promise<Map<string, Directory>> {
  const tree = new Map<string, Directory>();
  const missing: BlobDigest[] = [];
  const seen = new Set([blobKey(root)]);
  let level = [root];
  while (level.length > 0) {
    const next: BlobDigest[] = [];
    await Promise.all(
      level.map(async (d) => {
        let bytes: Uint8Array;
        try {
          bytes = await cas.readBytes(d, signal);
        } catch (e) {
          if (e instanceof BlobNotFoundError) return void missing.push(d);
          throw e;
        }
        let dir: Directory;
        try {
          dir = fromBinary(DirectorySchema, bytes);
        } catch {
          throw invalidArgument(`input ${blobKey(d)} is not a Directory message`);
        }
        checkDirectory(dir, blobKey(d));
        tree.set(blobKey(d), dir);
        for (const c of dir.directories) {
          const cd = parseDigest(c.digest, `input directory ${c.name}`);
          if (!seen.has(blobKey(cd))) (seen.add(blobKey(cd)), next.push(cd));
        }
      }),
    );
    level = next;
  }
  if (missing.length > 0) {
    throw new RunnerError("FAILED_PRECONDITION", `${missing.length} input Directory blob(s) are not in the CAS`, missing.map(missingSubject));
  }
  return tree;
}

/** Lays the tree out under `dest` (which must exist); FAILED_PRECONDITION lists missing files. */
export async function stageInputs(
  tree: Map<string, Directory>,
  root: BlobDigest,
  dest: string,
  cas: CasClient,
  cache: FileCache,
  signal?: AbortSignal,
): Promise<void> {
  const files: { digest: BlobDigest; executable: boolean; path: string }[] = [];
  const symlinks: { target: string; path: string }[] = [];
  const stack = [{ digest: root, abs: dest }];
  while (stack.length > 0) {
    const { digest, abs } = stack.pop()!;
    const dir = tree.get(blobKey(digest))!;
    for (const f of dir.files) {
      files.push({ digest: parseDigest(f.digest, `input file ${f.name}`), executable: f.isExecutable, path: path.join(abs, f.name) });
    }
    for (const s of dir.symlinks) symlinks.push({ target: s.target, path: path.join(abs, s.name) });
    for (const c of dir.directories) {
      const child = path.join(abs, c.name);
      await fs.mkdir(child);
      stack.push({ digest: parseDigest(c.digest, `input directory ${c.name}`), abs: child });
    }
  }

  const missing = new Map<string, BlobDigest>();
  await forEachLimit(files, STAGE_CONCURRENCY, async (f) => {
    signal?.throwIfAborted();
    if (isEmpty(f.digest)) {
      await fs.writeFile(f.path, "", { flag: "wx" });
      await fs.chmod(f.path, f.executable ? 0o555 : 0o444);
      return;
    }
    try {
      await cache.materialize(f.digest, f.executable, f.path, (d, tmp) => cas.readToFile(d, tmp, signal));
    } catch (e) {
      if (e instanceof BlobNotFoundError) missing.set(blobKey(f.digest), f.digest);
      else throw e;
    }
  });
  if (missing.size > 0) {
    throw new RunnerError("FAILED_PRECONDITION", `${missing.size} input file blob(s) are not in the CAS`, [...missing.values()].map(missingSubject));
  }
  for (const s of symlinks) await fs.symlink(s.target, s.path);
}

/**
 * Checks the working directory exists and creates the directories leading up to each output
 * (for output_directories, not the directory itself). Returns the working directory's path.
 */
export async function prepareWorkingDirectory(inputRoot: string, plan: CommandPlan): Promise<string> {
  const cwd = path.join(inputRoot, plan.workingDirectory);
  const st = await fs.stat(cwd).catch(() => null);
  if (!st?.isDirectory()) throw invalidArgument(`working_directory ${JSON.stringify(plan.workingDirectory)} is not a directory of the input root`);
  const parents = new Set<string>();
  const o = plan.outputs;
  for (const p of o.style === "paths" ? o.paths : [...o.files, ...o.directories]) if (p) parents.add(path.dirname(path.join(cwd, p)));
  for (const dir of parents) {
    try {
      await fs.mkdir(dir, { recursive: true });
    } catch (e) {
      throw invalidArgument(`cannot create the parent directory of an output (${path.relative(cwd, dir)}): ${errnoOf(e) ?? e}`);
    }
  }
  return cwd;
}
