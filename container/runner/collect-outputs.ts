// The outputs an action produced, as ActionResult fields plus the blobs to upload: files (with
// their executable bit), directories as Tree messages, symlinks as OutputSymlinks. Every Directory
// is canonical (entries sorted by name, no default values written: protobuf-es omits them), and a
// Tree lists each distinct child Directory once, parents before children, encoded record by record
// from the very bytes that were hashed, so clients that re-encode and look up each Directory by
// digest (Bazel) find exactly these. When the Command's output_node_properties ask for them, each
// file, symlink and directory carries its unix_mode (permission bits) and mtime (to the nanosecond).
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { Stats } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import {
  DirectoryNodeSchema,
  DirectorySchema,
  FileNodeSchema,
  NodePropertiesSchema,
  OutputDirectorySchema,
  OutputFileSchema,
  OutputSymlinkSchema,
  SymlinkNodeSchema,
  type ActionResultSchema,
  type DirectoryNode,
  type FileNode,
  type NodeProperties,
  type SymlinkNode,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import type { BlobSource } from "./cas-client.ts";
import type { CommandPlan, NodePropertyNames } from "../../src/shared/command-plan.ts";
import { blobKey, toProtoDigest, type BlobDigest } from "../../src/shared/digest.ts";
import { digestOfBytes, digestOfFile } from "./hash.ts";
import { errnoOf } from "./errors.ts";
import type { Limiter } from "./limit.ts";
import { resolveInside } from "./stage-inputs.ts";

type ResultFields = Pick<
  MessageInitShape<typeof ActionResultSchema>,
  "outputFiles" | "outputDirectories" | "outputSymlinks" | "outputFileSymlinks" | "outputDirectorySymlinks"
>;

export interface CollectedOutputs {
  fields: Required<ResultFields>;
  blobs: BlobSource[];
  /** Outputs of the wrong type (an output file that is a directory, ...): FAILED_PRECONDITION. */
  problems: string[];
}

/** Sorting by code point, as REAPI requires: the UTF-8 bytes, not UTF-16 units. */
const byName = (a: { name: string }, b: { name: string }) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));

const isExecutable = (st: Stats) => (st.mode & 0o111) !== 0;

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await fs.lstat(p);
  } catch (e) {
    if (errnoOf(e) === "ENOENT" || errnoOf(e) === "ENOTDIR") return null;
    throw e;
  }
}

/** The NodeProperties of the node at `abs` (a symlink's own) that `want` names; undefined for none. */
async function nodePropertiesOf(abs: string, want: NodePropertyNames): Promise<NodeProperties | undefined> {
  if (!want.unixMode && !want.mtime) return undefined;
  const st = await fs.lstat(abs, { bigint: true });
  return create(NodePropertiesSchema, {
    ...(want.mtime ? { mtime: { seconds: st.mtimeNs / 1_000_000_000n, nanos: Number(st.mtimeNs % 1_000_000_000n) } } : {}),
    ...(want.unixMode ? { unixMode: Number(st.mode & 0o7777n) } : {}),
  });
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

interface DirectoryBlob {
  digest: BlobDigest;
  bytes: Uint8Array;
  /** blobKeys of the subdirectories, in name order. */
  children: string[];
}

/** Tree messages for output directories, sharing the file hashing and blob list of one action. */
class TreeBuilder {
  private readonly dirs = new Map<string, DirectoryBlob>();

  constructor(
    private readonly hashFile: (abs: string) => Promise<BlobDigest>,
    private readonly blobs: BlobSource[],
    private readonly directoryBlobs: boolean,
    private readonly props: (abs: string) => Promise<NodeProperties | undefined>,
  ) {}

  private async directory(abs: string): Promise<DirectoryBlob> {
    const files: FileNode[] = [];
    const directories: DirectoryNode[] = [];
    const symlinks: SymlinkNode[] = [];
    const children = new Map<string, string>();
    await Promise.all(
      (await fs.readdir(abs)).map(async (name) => {
        const p = path.join(abs, name);
        const st = await fs.lstat(p);
        if (st.isSymbolicLink()) {
          symlinks.push(create(SymlinkNodeSchema, { name, target: await fs.readlink(p), nodeProperties: await this.props(p) }));
        } else if (st.isDirectory()) {
          const child = await this.directory(p);
          children.set(name, blobKey(child.digest));
          directories.push(create(DirectoryNodeSchema, { name, digest: toProtoDigest(child.digest) }));
        } else if (st.isFile()) {
          const digest = await this.hashFile(p);
          files.push(create(FileNodeSchema, { name, digest: toProtoDigest(digest), isExecutable: isExecutable(st), nodeProperties: await this.props(p) }));
        }
        // Sockets, FIFOs and devices have no REAPI representation: left out.
      }),
    );
    files.sort(byName);
    directories.sort(byName);
    symlinks.sort(byName);
    const bytes = toBinary(DirectorySchema, create(DirectorySchema, { files, directories, symlinks, nodeProperties: await this.props(abs) }));
    const blob = { digest: digestOfBytes(bytes), bytes, children: directories.map((d) => children.get(d.name)!) };
    this.dirs.set(blobKey(blob.digest), blob);
    return blob;
  }

  /** An OutputDirectory for the directory at `abs`, its Tree (and Directory) blobs queued for upload. */
  async output(outputPath: string, abs: string): Promise<MessageInitShape<typeof OutputDirectorySchema>> {
    const root = await this.directory(abs);
    // Reverse post-order of a depth-first walk: each distinct Directory once, parents first.
    const order: DirectoryBlob[] = [];
    const seen = new Set<string>();
    const visit = (b: DirectoryBlob) => {
      if (seen.has(blobKey(b.digest))) return;
      seen.add(blobKey(b.digest));
      for (const c of b.children) visit(this.dirs.get(c)!);
      order.push(b);
    };
    visit(root);
    order.reverse();
    // Tree{root = 1, children = 2}, written as records: tag 0x0a for the root, 0x12 for each child.
    const parts: Uint8Array[] = [];
    order.forEach((b, i) => parts.push(Uint8Array.from([i === 0 ? 0x0a : 0x12, ...varint(b.bytes.byteLength)]), b.bytes));
    const tree = Buffer.concat(parts);
    const treeDigest = digestOfBytes(tree);
    this.blobs.push({ digest: treeDigest, bytes: tree });
    if (this.directoryBlobs) for (const b of order) this.blobs.push({ digest: b.digest, bytes: b.bytes });
    return {
      path: outputPath,
      treeDigest: toProtoDigest(treeDigest),
      isTopologicallySorted: true,
      ...(this.directoryBlobs ? { rootDirectoryDigest: toProtoDigest(root.digest) } : {}),
    };
  }
}

export async function collectOutputs(cwd: string, plan: CommandPlan, limiter: Limiter): Promise<CollectedOutputs> {
  const blobs: BlobSource[] = [];
  const problems: string[] = [];
  const fields: CollectedOutputs["fields"] = {
    outputFiles: [],
    outputDirectories: [],
    outputSymlinks: [],
    outputFileSymlinks: [],
    outputDirectorySymlinks: [],
  };
  const hashFile = async (abs: string) => {
    const digest = await limiter.run(() => digestOfFile(abs));
    blobs.push({ digest, path: abs });
    return digest;
  };
  const props = (abs: string) => nodePropertiesOf(abs, plan.nodeProperties);
  const trees = new TreeBuilder(hashFile, blobs, plan.directoryBlobs, props);
  const file = async (p: string, abs: string, st: Stats) =>
    create(OutputFileSchema, { path: p, digest: toProtoDigest(await hashFile(abs)), isExecutable: isExecutable(st), nodeProperties: await props(abs) });
  const symlink = async (p: string, abs: string) =>
    create(OutputSymlinkSchema, { path: p, target: await fs.readlink(abs), nodeProperties: await props(abs) });
  const directory = async (p: string, abs: string) => create(OutputDirectorySchema, await trees.output(p, abs));
  const targetOf = (abs: string) => fs.stat(abs).catch(() => null);

  // An output's parents must be real directories: an action that replaced one with a symlink
  // must not make the runner read (and upload) files from outside its input root.
  const locate = async (p: string) => {
    const abs = await resolveInside(cwd, p);
    if (abs === null) problems.push(`output ${p} lies under a symlink or a file, not a directory; not collected`);
    return abs;
  };
  const o = plan.outputs;
  if (o.style === "paths") {
    for (const p of o.paths) {
      const abs = await locate(p);
      if (abs === null) continue;
      const st = await lstatOrNull(abs);
      if (!st) continue;
      if (st.isSymbolicLink()) fields.outputSymlinks.push(await symlink(p, abs));
      else if (st.isDirectory()) fields.outputDirectories.push(await directory(p, abs));
      else if (st.isFile()) fields.outputFiles.push(await file(p, abs, st));
      else problems.push(`output ${p} is neither a file, a directory nor a symlink`);
    }
  } else {
    for (const p of o.files) {
      const abs = await locate(p);
      if (abs === null) continue;
      const st = await lstatOrNull(abs);
      if (!st) continue;
      if (st.isSymbolicLink()) {
        if ((await targetOf(abs))?.isDirectory()) problems.push(`output file ${p} is a symlink to a directory`);
        else fields.outputFileSymlinks.push(await symlink(p, abs));
      } else if (st.isFile()) fields.outputFiles.push(await file(p, abs, st));
      else problems.push(`output file ${p} is ${st.isDirectory() ? "a directory" : "not a regular file"}`);
    }
    for (const p of o.directories) {
      const abs = await locate(p);
      if (abs === null) continue;
      const st = await lstatOrNull(abs);
      if (!st) continue;
      if (st.isSymbolicLink()) {
        const target = await targetOf(abs);
        if (target && !target.isDirectory()) problems.push(`output directory ${p} is a symlink to a file`);
        else fields.outputDirectorySymlinks.push(await symlink(p, abs));
      } else if (st.isDirectory()) fields.outputDirectories.push(await directory(p, abs));
      else problems.push(`output directory ${p} is not a directory`);
    }
  }
  return { fields, blobs, problems };
}
