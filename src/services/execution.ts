// Execution: Execute and WaitExecution. Errors found while creating the operation are RPC
// statuses; errors while running go in ExecuteResponse.status; Operation.error is never set.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  DigestFunction_Value,
  Execution,
  ExecuteOperationMetadataSchema,
  ExecuteResponseSchema,
  ExecutionStage_Value,
  type ExecuteRequest,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { OperationSchema, type Operation } from "../gen/google/longrunning/operations_pb.ts";
import { checkAction } from "../execution/check-action.ts";
import { configuredRunners, offers, runnerInfo } from "../execution/runners.ts";
import { operationStub, watchOperation, notFoundOperation } from "../execution/watch.ts";
import { checkDigestFunction, parseDigest, toProtoDigest, type BlobDigest } from "../storage/digest.ts";
import { inlineOutputs, lookupActionResult } from "./action-cache.ts";
import { scopeFor, type Scope } from "./scope.ts";
import { authorize, presentedKey, resolvePrincipal } from "../auth.ts";
import { keyConfig, kilnEnv } from "../config.ts";

const metadataOf = (stage: ExecutionStage_Value, d: BlobDigest) =>
  anyPack(ExecuteOperationMetadataSchema, create(ExecuteOperationMetadataSchema, {
    stage,
    actionDigest: toProtoDigest(d),
    digestFunction: DigestFunction_Value.SHA256,
  }));

function doneOperation(name: string, d: BlobDigest, response: MessageInitShape<typeof ExecuteResponseSchema>): Operation {
  return create(OperationSchema, {
    name,
    done: true,
    metadata: metadataOf(ExecutionStage_Value.COMPLETED, d),
    result: { case: "response", value: anyPack(ExecuteResponseSchema, create(ExecuteResponseSchema, response)) },
  });
}

/** Fails fast when no runner could ever take this platform, rather than queueing forever. */
async function requireRunner(s: Scope, platform: [string, string][]) {
  const refs = configuredRunners(s.env);
  if (refs.length === 0) {
    throw new ConnectError("remote execution is not configured on this server (no RUNNER_URLS or RUNNER containers)", Code.FailedPrecondition);
  }
  const infos = (await Promise.all(refs.map((r) => runnerInfo(s.env, r)))).filter((i) => i !== null);
  if (infos.length === 0) throw new ConnectError("no runner is reachable right now; retry shortly", Code.Unavailable);
  if (!infos.some((i) => offers(i, platform))) {
    const offered = [...new Set(infos.flatMap((i) => Object.entries(i.properties).flatMap(([k, vs]) => vs.map((v) => `${k}=${v}`))))];
    throw new ConnectError(
      `no runner offers the platform ${platform.map(([k, v]) => `${k}=${v}`).join(", ")}; runners offer: ${offered.join(", ") || "(nothing)"}`,
      Code.FailedPrecondition,
    );
  }
}

/** Inlining asked for in the request, applied to a finished result. */
async function withInlining(s: Scope, op: Operation, req: ExecuteRequest): Promise<Operation> {
  if (!op.done || op.result.case !== "response" || !(req.inlineStdout || req.inlineStderr || req.inlineOutputFiles.length)) return op;
  const res = anyUnpack(op.result.value, ExecuteResponseSchema);
  if (!res?.result) return op;
  await inlineOutputs(s, res.result, req);
  op.result = { case: "response", value: anyPack(ExecuteResponseSchema, res) };
  return op;
}

async function* execute(req: ExecuteRequest, ctx: HandlerContext): AsyncGenerator<Operation> {
  const s = await scopeFor(ctx, req.instanceName, "write");
  checkDigestFunction(req.digestFunction);
  const digest = parseDigest(req.actionDigest, "action_digest");
  const checked = await checkAction(s.store, digest);

  if (!req.skipCacheLookup) {
    const hit = await lookupActionResult(s, digest);
    if (hit) {
      yield await withInlining(s, doneOperation(`operations/${crypto.randomUUID()}`, digest, { result: hit, cachedResult: true }), req);
      return;
    }
  }
  await requireRunner(s, checked.platform);

  const name = `operations/${crypto.randomUUID()}`;
  const scheduler = `${s.principal.tenant}\n${s.instanceName}\n${JSON.stringify(checked.platform)}`;
  const doNotCache = checked.action.doNotCache;
  await operationStub(s.env, name).init({
    name,
    tenant: s.principal.tenant,
    instanceName: s.instanceName,
    actionDigest: digest,
    doNotCache,
    timeoutMs: checked.timeoutMs,
    priority: req.executionPolicy?.priority ?? 0,
    scheduler,
    authorization: ctx.requestHeader.get("authorization"),
  });
  const queued = await s.env.SCHEDULER.get(s.env.SCHEDULER.idFromName(scheduler)).enqueue({
    name,
    priority: req.executionPolicy?.priority ?? 0,
    // Identical actions in flight share one run; do_not_cache actions never merge.
    dedupKey: doNotCache ? null : `sha256:${digest.hash}/${digest.size}`,
    platform: checked.platform,
  });
  if (queued.joined) await operationStub(s.env, name).expire();
  for await (const op of watchOperation(s.env, queued.name, ctx.signal)) yield await withInlining(s, op, req);
}

/** The caller may see an operation only within its tenant and instance-name scope. */
export async function authorizeOperation(ctx: HandlerContext, name: string, access: "read" | "write") {
  const stub = operationStub(kilnEnv(), name);
  const owner = await stub.owner();
  if (!owner) throw notFoundOperation(name);
  const principal = await resolvePrincipal(await keyConfig(), presentedKey(ctx.requestHeader.get("authorization")));
  authorize(principal, owner.instanceName, access);
  if (principal.tenant !== owner.tenant) throw notFoundOperation(name);
  return stub;
}

export const executionService: ServiceImpl<typeof Execution> = {
  execute,
  async *waitExecution(req, ctx) {
    await authorizeOperation(ctx, req.name, "read");
    yield* watchOperation(kilnEnv(), req.name, ctx.signal);
  },
};
