// Walking Merkle trees of Directory messages stored in the CAS.
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { DirectorySchema, TreeSchema, type Directory, type Tree } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { blobKey, parseDigest, type BlobDigest } from "./digest.ts";
import type { BlobStore } from "./blob-store.ts";
import type { SmallLookup } from "./cas-index.ts";
import { Code, ConnectError } from "../errors.ts";
import { mapLimit } from "./map-limit.ts";
import { readFailed } from "./read-failures.ts";
import { isSmall } from "./small-blobs.ts";

/** Largest Directory or Tree message we read into memory. */
export const MAX_TREE_MESSAGE_BYTES = 64 * 1024 * 1024;

export async function readBytes(store: BlobStore, d: BlobDigest, looked?: SmallLookup): Promise<Uint8Array> {
  const { body } = await store.read(d, 0, 0, looked);
  // A body that breaks off is UNAVAILABLE, never bytes that do not parse (readTree's INVALID_ARGUMENT).
  const bytes = await new Response(body).arrayBuffer().catch((e: unknown): Promise<ArrayBuffer> => Promise.reject(readFailed(`blob ${blobKey(d)}`, "retry", e)));
  return new Uint8Array(bytes);
}

/**
 * Reads a message stored in the CAS; null when absent. Throws INVALID_ARGUMENT if it does not parse.
 * `looked`: what the index answered for it already (BlobStore.smallLookups).
 */
export async function readMessage<S extends DescMessage>(store: BlobStore, d: BlobDigest, schema: S, looked?: SmallLookup): Promise<MessageShape<S> | null> {
  if (d.size > MAX_TREE_MESSAGE_BYTES) throw new ConnectError(`${schema.name} ${blobKey(d)} is too large`, Code.InvalidArgument);
  let bytes: Uint8Array;
  try {
    bytes = await readBytes(store, d, looked);
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

/** Directories asked of the index in one call per shard; more are read in several such rounds. */
export const DIRECTORY_BATCH = 500;

/** Directories over SMALL_BLOB_MAX_BYTES read from R2 at once. */
const R2_CONCURRENCY = 8;

/**
 * Reads Directories in order (null: absent from the CAS), for walks of whole trees: those of up to
 * SMALL_BLOB_MAX_BYTES (most, by count) from the index in one call per shard for each
 * DIRECTORY_BATCH of them, the others from R2. A tree of 10,000 small directories costs a few
 * hundred subrequests, not 10,000. With a `budget` of subrequests it stops before an R2 read
 * would pass it: `read` says how many of `digests` it read (a prefix); `subrequests`, what it spent.
 */
export async function readDirectories(
  store: BlobStore,
  digests: readonly BlobDigest[],
  budget = Infinity,
): Promise<{ dirs: (Directory | null)[]; subrequests: number; read: number }> {
  const dirs: (Directory | null)[] = [];
  let subrequests = 0;
  for (let from = 0; from < digests.length; from += DIRECTORY_BATCH) {
    const batch = digests.slice(from, from + DIRECTORY_BATCH);
    const looked = await store.smallLookups(batch);
    subrequests += new Set(batch.filter((_, i) => looked[i] !== undefined).map((d) => store.index.shardKeyOf(d.hash))).size;
    // R2 reads: directories over 4 KiB, and small ones the index holds without bytes (or could not answer for).
    let take = 0;
    for (; take < batch.length; take++) {
      const r2 = goesToR2(batch[take]!, looked[take]) ? 1 : 0;
      if (subrequests + r2 > budget) break;
      subrequests += r2;
    }
    dirs.push(...(await mapLimit(batch.slice(0, take), R2_CONCURRENCY, (d, i) => readMessage(store, d, DirectorySchema, looked[i]))));
    if (take < batch.length) return { dirs, subrequests, read: from + take };
  }
  return { dirs, subrequests, read: digests.length };
}

/** Whether reading `d` reads R2, the index having answered `looked` (undefined: not asked, not small). */
function goesToR2(d: BlobDigest, looked: SmallLookup | undefined): boolean {
  if (d.size === 0) return false;
  return looked === undefined || looked === "r2" || looked instanceof ConnectError;
}

/**
 * What reading a batch of Directories with readDirectories costs at most, in subrequests, from
 * their digests alone, as directories are added: one index call per shard among the small ones,
 * one R2 read per larger one (a small one stored in R2 by an older Kiln costs one more, rarely).
 */
export class DirectoryReadCost {
  private readonly shards = new Set<number>();
  total = 0;

  constructor(private readonly store: BlobStore) {}

  /** What adding `d` would add. */
  marginal(d: BlobDigest): number {
    if (d.size === 0) return 0;
    return isSmall(d) ? (this.shards.has(this.store.index.shardKeyOf(d.hash)) ? 0 : 1) : 1;
  }

  add(d: BlobDigest): void {
    this.total += this.marginal(d);
    if (d.size > 0 && isSmall(d)) this.shards.add(this.store.index.shardKeyOf(d.hash));
  }
}

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
