// The input root on disk: fetch the Directory tree from the CAS, check it against the runner's
// bounds (before anything is staged), lay it out in the work directory (directories, files from
// the file cache, symlinks last), and create the parent directories of the outputs. Nothing here
// follows a symlink: input symlinks are created after every file and directory (so no staging
// write goes through one), and the working directory and output parents must be real directories
// inside the input root.
import { fromBinary } from "@bufbuild/protobuf";
import fs from "node:fs/promises";
import path from "node:path";
import { DirectorySchema, type Directory } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { blobKey, isEmptyBlob, missingSubject, parseDigest, type BlobDigest } from "../../src/shared/digest.ts";
import { BlobNotFoundError, type CasClient } from "./cas-client.ts";
import type { CommandPlan } from "../../src/shared/command-plan.ts";
import { checkInputDirectory } from "../../src/shared/input-directory.ts";
import { Code, ConnectError, errnoOf, invalidArgument, missingBlobs } from "./errors.ts";
import type { FileCache } from "./file-cache.ts";
import { forEachLimit } from "./limit.ts";
import type { Identity } from "./sandbox.ts";

/** Local file operations in flight per action (network transfers are bounded by the CAS limiter). */
const STAGE_CONCURRENCY = 64;

export interface InputLimits {
  /** Files, directories and symlinks staged, counting every occurrence of a repeated subtree. */
  maxEntries: number;
  /** Bytes of the files staged, counted the same way. */
  maxBytes: number;
}

const tooLarge = (what: string, limit: number) =>
  new ConnectError(`the input tree has more ${what} than this runner stages (at most ${limit})`, Code.ResourceExhausted);

/** Every Directory of the tree under `root`, by blobKey; FAILED_PRECONDITION lists any that are missing. */
export async function fetchInputTree(cas: CasClient, root: BlobDigest, limits: InputLimits, signal?: AbortSignal): Promise<Map<string, Directory>> {
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
        checkInputDirectory(dir, blobKey(d));
        tree.set(blobKey(d), dir);
        for (const c of dir.directories) {
          const cd = parseDigest(c.digest, `input directory ${c.name}`);
          if (!seen.has(blobKey(cd))) (seen.add(blobKey(cd)), next.push(cd));
        }
      }),
    );
    // Distinct directories are bounded too: a wide tree is refused before all of it is fetched.
    if (seen.size > limits.maxEntries) throw tooLarge("entries", limits.maxEntries);
    level = next;
  }
  if (missing.length > 0) throw missingBlobs(`${missing.length} input Directory blob(s) are not in the CAS`, missing.map(missingSubject));
  return tree;
}

/**
 * What staging the tree would create, counting repeated subtrees each time they occur (a few
 * kilobytes of Directory messages can name billions of files), computed once per distinct
 * directory; throws RESOURCE_EXHAUSTED beyond the limits.
 */
export function checkInputSize(tree: Map<string, Directory>, root: BlobDigest, limits: InputLimits): { entries: number; bytes: number } {
  const memo = new Map<string, { entries: number; bytes: number }>();
  const measure = (key: string): { entries: number; bytes: number } => {
    const known = memo.get(key);
    if (known) return known;
    const dir = tree.get(key)!;
    let entries = dir.files.length + dir.directories.length + dir.symlinks.length;
    let bytes = 0;
    for (const f of dir.files) bytes += Number(f.digest?.sizeBytes ?? 0n);
    for (const c of dir.directories) {
      const sub = measure(blobKey(parseDigest(c.digest, `input directory ${c.name}`)));
      entries += sub.entries;
      bytes += sub.bytes;
    }
    // Saturates instead of overflowing: anything past the limit is refused anyway.
    const size = { entries: Math.min(entries, Number.MAX_SAFE_INTEGER), bytes: Math.min(bytes, Number.MAX_SAFE_INTEGER) };
    memo.set(key, size);
    return size;
  };
  const size = measure(blobKey(root));
  if (size.entries > limits.maxEntries) throw tooLarge("entries", limits.maxEntries);
  if (size.bytes > limits.maxBytes) throw tooLarge("bytes", limits.maxBytes);
  return size;
}

/**
 * Lays the tree out under `dest` (which must exist); FAILED_PRECONDITION lists missing files.
 * Directories belong to `owner` (the action's uid) so the action can write its outputs there;
 * files are the cache's (see file-cache.ts). Stops at the first check after `signal` aborts.
 */
export async function stageInputs(
  tree: Map<string, Directory>,
  root: BlobDigest,
  dest: string,
  cas: CasClient,
  cache: FileCache,
  owner: Identity | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const files: { digest: BlobDigest; executable: boolean; path: string }[] = [];
  const symlinks: { target: string; path: string }[] = [];
  const dirs = [dest];
  const stack = [{ digest: root, abs: dest }];
  while (stack.length > 0) {
    signal?.throwIfAborted();
    const { digest, abs } = stack.pop()!;
    const dir = tree.get(blobKey(digest))!;
    for (const f of dir.files) {
      files.push({ digest: parseDigest(f.digest, `input file ${f.name}`), executable: f.isExecutable, path: path.join(abs, f.name) });
    }
    for (const s of dir.symlinks) symlinks.push({ target: s.target, path: path.join(abs, s.name) });
    for (const c of dir.directories) {
      const child = path.join(abs, c.name);
      await fs.mkdir(child);
      dirs.push(child);
      stack.push({ digest: parseDigest(c.digest, `input directory ${c.name}`), abs: child });
    }
  }

  const missing = new Map<string, BlobDigest>();
  await forEachLimit(files, STAGE_CONCURRENCY, async (f) => {
    signal?.throwIfAborted();
    if (isEmptyBlob(f.digest)) {
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
  if (missing.size > 0) throw missingBlobs(`${missing.size} input file blob(s) are not in the CAS`, [...missing.values()].map(missingSubject));
  signal?.throwIfAborted();
  for (const s of symlinks) await fs.symlink(s.target, s.path);
  if (owner) await forEachLimit(dirs, STAGE_CONCURRENCY, (d) => fs.lchown(d, owner.uid, owner.gid));
  // The input root is the action's alone: other uids cannot even look in.
  await fs.chmod(dest, 0o700);
}

/**
 * `rel` (relative, checked by command.ts) under `root` as an absolute path, if every component
 * before the last is a real directory, not a symlink; with `create`, missing ones are made (and
 * given to `owner`). null when a component is a symlink or not a directory; a missing component
 * (without `create`) ends the walk: nothing can be below it.
 */
export async function resolveInside(root: string, rel: string, o: { create?: boolean; owner?: Identity; includeLast?: boolean } = {}): Promise<string | null> {
  const segs = rel === "" ? [] : rel.split("/");
  const walk = o.includeLast ? segs : segs.slice(0, -1);
  let at = root;
  for (const seg of walk) {
    at = path.join(at, seg);
    let st = await fs.lstat(at).catch((e: unknown) => {
      if (errnoOf(e) === "ENOENT") return null;
      throw e;
    });
    // Nothing there: nothing below it either (the caller's lstat will say so).
    if (!st && !o.create) return path.join(root, ...segs);
    if (!st) {
      await fs.mkdir(at);
      if (o.owner) await fs.lchown(at, o.owner.uid, o.owner.gid);
      st = await fs.lstat(at);
    }
    if (!st?.isDirectory()) return null;
  }
  return path.join(root, ...segs);
}

/**
 * Checks the working directory is a real directory of the input root and creates the directories
 * leading up to each output (for output_directories, not the directory itself). Returns the
 * working directory's path.
 */
export async function prepareWorkingDirectory(inputRoot: string, plan: CommandPlan, owner: Identity | undefined): Promise<string> {
  const cwd = await resolveInside(inputRoot, plan.workingDirectory, { includeLast: true });
  if (!cwd || !(await fs.lstat(cwd).catch(() => null))?.isDirectory()) throw invalidArgument(`working_directory ${JSON.stringify(plan.workingDirectory)} is not a directory of the input root`);
  const o = plan.outputs;
  for (const p of o.style === "paths" ? o.paths : [...o.files, ...o.directories]) {
    if (!p) continue;
    const ok = await resolveInside(cwd, p, { create: true, owner }).catch((e: unknown) => {
      throw invalidArgument(`cannot create the parent directory of output ${JSON.stringify(p)}: ${errnoOf(e) ?? e}`);
    });
    if (!ok) throw invalidArgument(`the parent of output ${JSON.stringify(p)} is an input symlink or file, not a directory`);
  }
  return cwd;
}
