// ActionCache: entries per (tenant, instance name), served only when every blob they reference
// is still in the CAS; UpdateActionResult accepts only entries whose blobs are all present.
import { create, fromBinary } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ActionCache,
  ActionResultSchema,
  type ActionResult,
  type GetActionResultRequest,
  type UpdateActionResultRequest,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { MAX_INLINE_BYTES } from "../config.ts";
import { invalidArgument, missingBlobs, notFound } from "../errors.ts";
import { checkDigestFunction, missingSubject, parseDigest, type BlobDigest } from "../storage/digest.ts";
import { actionResultKey, putActionResult } from "../storage/action-store.ts";
import { readBytes, readTree, treeFileDigests } from "../storage/merkle.ts";
import { scopeFor, type Scope } from "./scope.ts";

const acKey = (s: Scope, hash: string) => actionResultKey(s.principal.tenant, s.instanceName, hash);

/** Every blob an ActionResult references, trees expanded to the files they list. */
export async function referencedBlobs(s: Pick<Scope, "store">, r: ActionResult, expandTrees: boolean): Promise<BlobDigest[]> {
  const out: BlobDigest[] = [];
  r.outputFiles.forEach((f, i) => out.push(parseDigest(f.digest, `output_files[${i}].digest`)));
  const trees = r.outputDirectories.map((d, i) => parseDigest(d.treeDigest, `output_directories[${i}].tree_digest`));
  out.push(...trees);
  r.outputDirectories.forEach((d, i) => {
    if (d.rootDirectoryDigest) out.push(parseDigest(d.rootDirectoryDigest, `output_directories[${i}].root_directory_digest`));
  });
  if (r.stdoutDigest) out.push(parseDigest(r.stdoutDigest, "stdout_digest"));
  if (r.stderrDigest) out.push(parseDigest(r.stderrDigest, "stderr_digest"));
  if (expandTrees) {
    const present = new Set((await s.store.index.missing(trees, false)).map((d) => d.hash));
    for (const t of trees) {
      if (present.has(t.hash)) continue; // missing trees are reported by the caller
      out.push(...treeFileDigests(await readTree(s.store, t)));
    }
  }
  return out;
}

/** The cached result for an action digest, or null (NOT_FOUND) if absent or incomplete. */
export async function lookupActionResult(s: Scope, action: BlobDigest): Promise<ActionResult | null> {
  const obj = await s.env.CAS.get(acKey(s, action.hash));
  if (!obj) return null;
  let result: ActionResult;
  try {
    result = fromBinary(ActionResultSchema, new Uint8Array(await obj.arrayBuffer()));
  } catch {
    return null; // an unreadable entry is a miss; the next update replaces it
  }
  const refs = await referencedBlobs(s, result, true);
  // Touching here keeps the blobs of a cache hit alive as long as the hit is used.
  if ((await s.store.index.missing(refs, true)).length > 0) return null;
  return result;
}

export async function inlineOutputs(s: Scope, r: ActionResult, req: { inlineStdout: boolean; inlineStderr: boolean; inlineOutputFiles: string[] }) {
  let budget = MAX_INLINE_BYTES;
  const take = async (d: BlobDigest | undefined) => {
    if (!d || d.size > budget) return undefined;
    budget -= d.size;
    return readBytes(s.store, d);
  };
  if (req.inlineStdout && r.stdoutDigest && r.stdoutRaw.byteLength === 0) {
    r.stdoutRaw = (await take(parseDigest(r.stdoutDigest))) ?? new Uint8Array();
  }
  if (req.inlineStderr && r.stderrDigest && r.stderrRaw.byteLength === 0) {
    r.stderrRaw = (await take(parseDigest(r.stderrDigest))) ?? new Uint8Array();
  }
  const wanted = new Set(req.inlineOutputFiles);
  for (const f of r.outputFiles) {
    if (wanted.has(f.path) && f.contents.byteLength === 0) f.contents = (await take(parseDigest(f.digest))) ?? new Uint8Array();
  }
}

export async function getActionResult(
  ctx: HandlerContext,
  req: GetActionResultRequest,
): Promise<ActionResult> {
  const s = await scopeFor(ctx, req.instanceName, "read");
  checkDigestFunction(req.digestFunction);
  const action = parseDigest(req.actionDigest, "action_digest");
  const result = await lookupActionResult(s, action);
  if (!result) throw notFound(`no complete action result for ${action.hash}/${action.size}`);
  await inlineOutputs(s, result, req);
  return result;
}

export async function updateActionResult(
  ctx: HandlerContext,
  req: UpdateActionResultRequest,
): Promise<ActionResult> {
  const s = await scopeFor(ctx, req.instanceName, "write");
  checkDigestFunction(req.digestFunction);
  const action = parseDigest(req.actionDigest, "action_digest");
  if (!req.actionResult) throw invalidArgument("action_result is required", "action_result");
  const result = req.actionResult;
  const missing = await s.store.index.missing(await referencedBlobs(s, result, false), false);
  if (missing.length > 0) {
    throw missingBlobs(`the action result references ${missing.length} blob(s) not in the CAS; upload them first`, missing.map(missingSubject));
  }
  await putActionResult(s.env.CAS, acKey(s, action.hash), result);
  return create(ActionResultSchema, result);
}

export const actionCacheService: ServiceImpl<typeof ActionCache> = {
  getActionResult: (req, ctx) => getActionResult(ctx, req),
  updateActionResult: (req, ctx) => updateActionResult(ctx, req),
};
