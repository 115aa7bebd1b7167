// Execution: Execute and WaitExecution. Errors found while creating the operation are RPC
// statuses; errors while running go in ExecuteResponse.status; Operation.error is never set.
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  ActionSchema,
  CommandSchema,
  DigestFunction_Value,
  Execution,
  ExecuteOperationMetadataSchema,
  ExecuteResponseSchema,
  ExecutionStage_Value,
  type ExecuteRequest,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { OperationSchema, type Operation } from "../gen/google/longrunning/operations_pb.ts";
import { checkAction } from "../execution/check-action.ts";
import { callOrigin } from "../execution/request-metadata.ts";
import { poolStub, shardOf, type EnqueueResult, type PoolEntry } from "../execution/pool.ts";
import { operationStub } from "../execution/operation-stub.ts";
import { watchOperation, notFoundOperation } from "../execution/watch.ts";
import { checkDigestFunction, parseDigest, toProtoDigest, type BlobDigest } from "../storage/digest.ts";
import { inlineOutputs, lookupActionResult } from "./action-cache.ts";
import { noteRemoteCall } from "./remote-actions.ts";
import { countActionCacheLookup } from "../metrics/lookups.ts";
import { checkLeaseUse, scopeFor, type Scope } from "./scope.ts";
import { authorize } from "../auth.ts";
import { requireCaller } from "../caller.ts";
import { executionConfigured, kilnEnv } from "../config.ts";

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

/** ExecutionPolicy.priority, clamped to the range Capabilities advertises. */
export const PRIORITY_RANGE = { min: -1000, max: 1000 };
const clampPriority = (p: number) => Math.min(PRIORITY_RANGE.max, Math.max(PRIORITY_RANGE.min, p));

/** A cross-object call on the way to queueing, retried a few times before the client sees it fail. */
async function retried<T>(what: string, call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (e) {
      if (attempt >= 3) {
        console.error(`${what} failed ${attempt} times`, e);
        throw new ConnectError(`could not ${what}; retry shortly`, Code.Unavailable);
      }
      await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
    }
  }
}

/**
 * Inlining as the request asks, applied to a finished result: what it asks for, and nothing else
 * (an entry served from the cache may hold bytes a client uploaded inline).
 */
async function withInlining(s: Scope, op: Operation, req: ExecuteRequest): Promise<Operation> {
  if (!op.done || op.result.case !== "response") return op;
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
  const origin = callOrigin(ctx.requestHeader);

  // A do_not_cache action is never answered from the cache (nor written to it).
  if (!req.skipCacheLookup && !checked.action.doNotCache) {
    const hit = await lookupActionResult(s, digest);
    countActionCacheLookup(hit !== null, "execute");
    if (hit) {
      // Kept as a finished operation, so GetOperation and WaitExecution find the name we hand out;
      // kept without bytes the entry may hold inline, which those calls never ask for.
      await inlineOutputs(s, hit, { inlineStdout: false, inlineStderr: false, inlineOutputFiles: [] });
      const name = `operations/${crypto.randomUUID()}`;
      const response = create(ExecuteResponseSchema, { result: hit, cachedResult: true });
      await operationStub(s.env, name).initDone(
        { name, tenant: s.principal.tenant, instanceName: s.instanceName, actionDigest: digest, doNotCache: false, timeoutMs: 0, priority: 0, shard: 0, toolInvocationId: origin.toolInvocationId },
        toBinary(ExecuteResponseSchema, response),
      );
      noteRemoteCall(s, ctx.requestHeader, digest, "hit", name);
      yield await withInlining(s, doneOperation(name, digest, response), req);
      return;
    }
  }
  if (!executionConfigured(s.env)) {
    throw new ConnectError("remote execution is not configured on this server (no RUNNER_KEYS and no runner containers)", Code.FailedPrecondition);
  }

  const name = `operations/${crypto.randomUUID()}`;
  const doNotCache = checked.action.doNotCache;
  const priority = clampPriority(req.executionPolicy?.priority ?? 0);
  const shard = shardOf(s.principal.tenant, digest.hash);
  const entry: PoolEntry = {
    shard,
    name,
    tenant: s.principal.tenant,
    instanceName: s.instanceName,
    actionDigest: digest,
    priority,
    // Identical actions of one tenant in flight share one run; do_not_cache actions never merge.
    // Tenants never do: each has its own CAS and action cache, and may not see the other's operation.
    dedupKey: doNotCache ? null : `${s.principal.tenant}\n${s.instanceName}\n${digest.hash}/${digest.size}\n${JSON.stringify(checked.platform)}`,
    platform: checked.platform,
    timeoutMs: checked.timeoutMs,
    queuedAt: Date.now(),
    origin: new URL(ctx.url).origin,
    action: toBinary(ActionSchema, checked.action),
    command: toBinary(CommandSchema, checked.command),
  };
  const op = operationStub(s.env, name);
  await retried("create the operation", () =>
    op.init(
      { name, tenant: s.principal.tenant, instanceName: s.instanceName, actionDigest: digest, doNotCache, timeoutMs: checked.timeoutMs, priority, shard, toolInvocationId: origin.toolInvocationId },
      entry,
    ),
  );
  const pool = poolStub(s.env, shard);
  let queued: EnqueueResult;
  for (let tries = 0; ; tries++) {
    try {
      queued = await retried<EnqueueResult>("queue the action", async () => (await pool.enqueue(entry)) as EnqueueResult);
    } catch (e) {
      await op.expire().catch(() => {});
      throw e;
    }
    // A merged-into operation that no longer exists leaves an orphan row: drop it, queue ours.
    if (queued.kind !== "joined" || tries > 0 || (await operationStub(s.env, queued.name).owner())) break;
    await pool.forget(queued.name);
  }
  if (queued.kind === "refused") {
    await op.expire();
    throw new ConnectError(queued.reason, Code.FailedPrecondition);
  }
  if (queued.kind === "joined") await op.expire();
  noteRemoteCall(s, ctx.requestHeader, digest, "execute", queued.name);
  for await (const op of watchOperation(s.env, queued.name, ctx.signal)) yield await withInlining(s, op, req);
}

/** The caller may see an operation only within its tenant and instance-name scope. */
export async function authorizeOperation(ctx: HandlerContext, name: string, access: "read" | "write") {
  const principal = await requireCaller(ctx.requestHeader, ctx.url);
  const stub = operationStub(kilnEnv(), name);
  const owner = await stub.owner();
  // Another tenant's operation is NOT_FOUND before any other check, which could tell it exists.
  if (!owner || principal.tenant !== owner.tenant) throw notFoundOperation(name);
  checkLeaseUse(principal, ctx, owner.instanceName);
  authorize(principal, owner.instanceName, access);
  return stub;
}

export const executionService: ServiceImpl<typeof Execution> = {
  execute,
  async *waitExecution(req, ctx) {
    await authorizeOperation(ctx, req.name, "read");
    yield* watchOperation(kilnEnv(), req.name, ctx.signal);
  },
};
