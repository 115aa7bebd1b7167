// ActionCache: entries per (tenant, instance name), served only when every blob they reference
// is still in the CAS; UpdateActionResult accepts only entries whose blobs are all present.
import { create, fromBinary } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ActionCache,
  ActionResultSchema,
  type ActionResult,
  type Digest,
  type GetActionResultRequest,
  type UpdateActionResultRequest,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { MAX_INLINE_BYTES } from "../config.ts";
import { Code, ConnectError, invalidArgument, missingBlobs, notFound } from "../errors.ts";
import { blobKey, checkDigestFunction, missingSubject, parseDigest, parseHash, type BlobDigest } from "../storage/digest.ts";
import { actionResultKey, putActionResult, readActionResult, refreshIfAgeing } from "../storage/action-store.ts";
import { childDirectories, readBytes, readDirectories, readTree, treeDirectoryDigests, treeFileDigests } from "../storage/merkle.ts";
import { noteRemoteCall } from "./remote-actions.ts";
import { scopeFor, type Scope } from "./scope.ts";
import { countActionCacheLookup } from "../metrics/lookups.ts";

const acKey = (s: Scope, hash: string) => actionResultKey(s.principal.tenant, s.instanceName, hash);

/** Directories walked under one DIRECTORY_ONLY output before the entry is refused as too large. */
const MAX_OUTPUT_DIRECTORIES = 100_000;

/** An action key; the size is undefined where the protocol has none (the Bazel HTTP cache). */
export interface ActionKey {
  hash: string;
  size?: number;
}

/**
 * The Directories under DIRECTORY_ONLY outputs (root_directory_digest without a Tree), level by
 * level, and the files they hold. A directory missing from the CAS is listed, not descended.
 */
export async function directoryBlobs(s: Pick<Scope, "store">, roots: BlobDigest[]): Promise<BlobDigest[]> {
  const out: BlobDigest[] = [];
  const seen = new Set<string>();
  for (let level = roots; level.length > 0; ) {
    const fresh = level.filter((d) => !seen.has(blobKey(d)));
    for (const d of fresh) seen.add(blobKey(d));
    if (seen.size > MAX_OUTPUT_DIRECTORIES) throw invalidArgument(`output directories hold over ${MAX_OUTPUT_DIRECTORIES} directories`);
    out.push(...fresh);
    const missing = new Set((await s.store.index.missing(fresh, false)).map(blobKey));
    const { dirs } = await readDirectories(s.store, fresh.filter((d) => !missing.has(blobKey(d))));
    level = [];
    for (const dir of dirs) {
      if (!dir) continue;
      dir.files.forEach((f) => out.push(parseDigest(f.digest, `file ${f.name}`)));
      level.push(...childDirectories(dir));
    }
  }
  return out;
}

/** Every blob an ActionResult references: trees expanded to their files, directories walked. */
export async function referencedBlobs(s: Pick<Scope, "store">, r: ActionResult): Promise<BlobDigest[]> {
  const out: BlobDigest[] = [];
  r.outputFiles.forEach((f, i) => out.push(parseDigest(f.digest, `output_files[${i}].digest`)));
  /** Trees, and whether the same output also names its root Directory (TREE_AND_DIRECTORY). */
  const trees: { tree: BlobDigest; withRoot: boolean }[] = [];
  const roots: BlobDigest[] = [];
  r.outputDirectories.forEach((d, i) => {
    const field = `output_directories[${i}]`;
    if (!d.treeDigest && !d.rootDirectoryDigest) throw invalidArgument(`${field} needs a tree_digest or a root_directory_digest`, field);
    if (d.treeDigest) trees.push({ tree: parseDigest(d.treeDigest, `${field}.tree_digest`), withRoot: !!d.rootDirectoryDigest });
    if (d.rootDirectoryDigest) {
      const root = parseDigest(d.rootDirectoryDigest, `${field}.root_directory_digest`);
      // With a Tree beside it, the Tree lists the files and the Directories below the root.
      if (d.treeDigest) out.push(root);
      else roots.push(root);
    }
  });
  if (r.stdoutDigest) out.push(parseDigest(r.stdoutDigest, "stdout_digest"));
  if (r.stderrDigest) out.push(parseDigest(r.stderrDigest, "stderr_digest"));
  out.push(...trees.map((t) => t.tree));
  const missingTrees = new Set((await s.store.index.missing(trees.map((t) => t.tree), false)).map(blobKey));
  for (const { tree, withRoot } of trees) {
    if (missingTrees.has(blobKey(tree))) continue;
    const t = await readTree(s.store, tree);
    out.push(...treeFileDigests(t));
    // A client reading the output by its root_directory_digest walks the Directory blobs below it.
    if (withRoot) out.push(...treeDirectoryDigests(t));
  }
  out.push(...(await directoryBlobs(s, roots)));
  return out;
}

/** The cached result for an action, or null (NOT_FOUND) if absent, incomplete or of another size. */
export async function lookupActionResult(s: Scope, action: ActionKey): Promise<ActionResult | null> {
  const stored = await readActionResult(s.env.CAS, acKey(s, action.hash), action.size);
  if (!stored) return null;
  const { obj, bytes } = stored;
  let result: ActionResult;
  try {
    result = fromBinary(ActionResultSchema, bytes);
  } catch {
    return null; // an unreadable entry is a miss; the next update replaces it
  }
  // Blobs gone or malformed make the entry a miss; the CAS failing to answer (UNAVAILABLE) does not:
  // taken for misses, an outage would have every client execute its actions again.
  const refs = await referencedBlobs(s, result).catch((e: unknown) => {
    if (e instanceof ConnectError && (e.code === Code.NotFound || e.code === Code.InvalidArgument)) return null;
    throw e;
  });
  // Touching here keeps the blobs of a cache hit alive as long as the hit is used.
  if (!refs || (await s.store.index.missing(refs, true)).length > 0) return null;
  await refreshIfAgeing(s.env, obj, bytes);
  return result;
}

/**
 * Inlines what the request asks for and only that (REAPI: the server SHOULD NOT inline unless
 * asked): contents stored with the entry are dropped unless requested, where a digest keeps them.
 * Everything inlined, stored bytes included, shares one MAX_INLINE_BYTES budget, so the answer
 * stays well under the 4 MiB message clients accept (REAPI: the server MUST omit inlining that
 * would exceed message size limits); what does not fit keeps only its digest.
 */
export async function inlineOutputs(s: Scope, r: ActionResult, req: { inlineStdout: boolean; inlineStderr: boolean; inlineOutputFiles: string[] }) {
  let budget = MAX_INLINE_BYTES;
  const fits = (n: number) => {
    if (n > budget) return false;
    budget -= n;
    return true;
  };
  const inline = async (wanted: boolean, raw: Uint8Array, digest: Digest | undefined): Promise<Uint8Array> => {
    if (!digest) return raw;
    if (!wanted) return new Uint8Array();
    if (raw.byteLength > 0) return fits(raw.byteLength) ? raw : new Uint8Array();
    const d = parseDigest(digest);
    return fits(d.size) ? readBytes(s.store, d) : new Uint8Array();
  };
  r.stdoutRaw = await inline(req.inlineStdout, r.stdoutRaw, r.stdoutDigest);
  r.stderrRaw = await inline(req.inlineStderr, r.stderrRaw, r.stderrDigest);
  const wanted = new Set(req.inlineOutputFiles);
  for (const f of r.outputFiles) f.contents = await inline(wanted.has(f.path), f.contents, f.digest);
}

export interface ActionKeyOptions {
  /** False where the protocol carries no action size (the Bazel HTTP cache): the hash alone keys. */
  sizeKnown: boolean;
}

const actionKeyOf = (req: { actionDigest?: Digest }, opts: ActionKeyOptions): ActionKey =>
  opts.sizeKnown ? parseDigest(req.actionDigest, "action_digest") : { hash: parseHash(req.actionDigest?.hash ?? "", "action_digest.hash") };

export async function getActionResult(
  ctx: HandlerContext,
  req: GetActionResultRequest,
  opts: ActionKeyOptions = { sizeKnown: true },
): Promise<ActionResult> {
  const s = await scopeFor(ctx, req.instanceName, "read");
  checkDigestFunction(req.digestFunction);
  const action = actionKeyOf(req, opts);
  const result = await lookupActionResult(s, action);
  noteRemoteCall(s, ctx.requestHeader, action, result ? "hit" : "miss");
  countActionCacheLookup(result !== null, "get");
  if (!result) throw notFound(`no complete action result for ${action.hash}/${action.size ?? "-"}`);
  await inlineOutputs(s, result, req);
  return result;
}

export async function updateActionResult(
  ctx: HandlerContext,
  req: UpdateActionResultRequest,
  opts: ActionKeyOptions = { sizeKnown: true },
): Promise<ActionResult> {
  const s = await scopeFor(ctx, req.instanceName, "write");
  checkDigestFunction(req.digestFunction);
  const action = actionKeyOf(req, opts);
  if (!req.actionResult) throw invalidArgument("action_result is required", "action_result");
  const result = req.actionResult;
  // Touching: the entry answers hits from now on, and its blobs must outlive the minimum lifetime.
  const missing = await s.store.index.missing(await referencedBlobs(s, result), true);
  if (missing.length > 0) {
    throw missingBlobs(`the action result references ${missing.length} blob(s) not in the CAS; upload them first`, missing.map(missingSubject));
  }
  // Without a size on the wire, the Action blob's own size (clients upload it first) keys the entry.
  const size = action.size ?? (await s.store.sizeOf(action.hash)) ?? undefined;
  await putActionResult(s.env.CAS, acKey(s, action.hash), result, size, `UpdateActionResult with API key "${s.principal.label}"`);
  noteRemoteCall(s, ctx.requestHeader, { hash: action.hash, size }, "write");
  return create(ActionResultSchema, result);
}

export const actionCacheService: ServiceImpl<typeof ActionCache> = {
  getActionResult: (req, ctx) => getActionResult(ctx, req),
  updateActionResult: (req, ctx) => updateActionResult(ctx, req),
};
