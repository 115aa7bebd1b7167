// Walking Merkle trees of Directory messages stored in the CAS.
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { DirectorySchema, TreeSchema, type Directory, type Tree } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { blobKey, parseDigest, type BlobDigest } from "./digest.ts";
import type { BlobStore } from "./blob-store.ts";
import type { SmallLookup } from "./cas-index.ts";
import { Code, ConnectError } from "../errors.ts";

/** Largest Directory or Tree message we read into memory. */
export const MAX_TREE_MESSAGE_BYTES = 64 * 1024 * 1024;

export async function readBytes(store: BlobStore, d: BlobDigest, looked?: SmallLookup): Promise<Uint8Array> {
  const { body } = await store.read(d, 0, 0, looked);
  return new Uint8Array(await new Response(body).arrayBuffer());
}

/** Reads a message stored in the CAS; null when absent. Throws INVALID_ARGUMENT if it does not parse. */
export async function readMessage<S extends DescMessage>(store: BlobStore, d: BlobDigest, schema: S): Promise<MessageShape<S> | null> {
  if (d.size > MAX_TREE_MESSAGE_BYTES) throw new ConnectError(`${schema.name} ${blobKey(d)} is too large`, Code.InvalidArgument);
  let bytes: Uint8Array;
  try {
    bytes = await readBytes(store, d);
  } catch (e) {
    if (e instanceof ConnectError && e.code === Code.NotFound) return null;
    throw e;
  }
  try {
    return fromBinary(schema, bytes);
  } catch {
    throw new ConnectError(`blob ${blobKey(d)} is not a ${schema.typeName} message`, Code.InvalidArgument);
  }
}

/** Reads a Directory; null when absent from the CAS. */
export const readDirectory = (store: BlobStore, d: BlobDigest): Promise<Directory | null> => readMessage(store, d, DirectorySchema);

export async function readTree(store: BlobStore, d: BlobDigest): Promise<Tree> {
  if (d.size > MAX_TREE_MESSAGE_BYTES) throw new ConnectError(`tree ${blobKey(d)} is too large`, Code.InvalidArgument);
  try {
    return fromBinary(TreeSchema, await readBytes(store, d));
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    throw new ConnectError(`blob ${blobKey(d)} is not a Tree message`, Code.InvalidArgument);
  }
}

/** Every file digest inside a Tree (root and children). */
export function treeFileDigests(tree: Tree): BlobDigest[] {
  const out: BlobDigest[] = [];
  for (const dir of [tree.root, ...tree.children]) {
    for (const f of dir?.files ?? []) out.push(parseDigest(f.digest, "tree file digest"));
  }
  return out;
}

/**
 * The digests of every Directory below a Tree's root, as its DirectoryNodes name them: the blobs a
 * client walking the root_directory_digest of the same output reads (no hashing of the Tree's
 * messages, whose encoding may differ from the blobs').
 */
export function treeDirectoryDigests(tree: Tree): BlobDigest[] {
  return [tree.root, ...tree.children].flatMap((dir) => (dir ? childDirectories(dir) : []));
}

/** The child directory digests of a Directory, in order. */
export const childDirectories = (dir: Directory): BlobDigest[] =>
  dir.directories.map((n) => parseDigest(n.digest, `directory ${n.name}`));
