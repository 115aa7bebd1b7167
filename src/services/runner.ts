// kiln.runner.v1.RunnerService: what a runner reports about one lease, authenticated with that
// lease's token (never a client key). Results go through the same completeness check as
// UpdateActionResult before the pool accepts them; late results of superseded leases are dropped.
import { create, toBinary } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { ExecutedActionMetadataSchema, ExecuteResponseSchema, type ExecuteResponse } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { LogStream, RunnerService } from "../gen/kiln/runner/v1/runner_pb.ts";
import { callerOf } from "../caller.ts";
import { kilnEnv } from "../config.ts";
import { Code, ConnectError, invalidArgument, missingBlobs } from "../errors.ts";
import { storedOperationStub } from "../execution/operation-stub.ts";
import { poolStub } from "../execution/pool.ts";
import type { LeaseClaims } from "../execution/tokens.ts";
import { BlobStore } from "../storage/blob-store.ts";
import { missingSubject } from "../storage/digest.ts";
import { referencedBlobs } from "./action-cache.ts";

/** Largest AppendLog payload; runners send far less (they flush every 64 KiB). */
const MAX_LOG_APPEND = 1024 * 1024;

async function leaseOf(ctx: HandlerContext, leaseId: string): Promise<LeaseClaims> {
  const principal = await callerOf(ctx.requestHeader, ctx.url);
  if (!principal.lease) throw new ConnectError("RunnerService needs the lease token of an assignment (Authorization: Bearer kiln1....)", Code.Unauthenticated);
  if (principal.lease.leaseId !== leaseId) throw new ConnectError("this token is for another lease", Code.PermissionDenied);
  return principal.lease;
}

/** Who produced a result, recorded in the action-cache entry it may become. */
function stampWorker(res: ExecuteResponse, lease: LeaseClaims) {
  if (!res.result) return;
  res.result.executionMetadata ??= create(ExecutedActionMetadataSchema);
  res.result.executionMetadata.worker = `${lease.runner} (runner key "${lease.credential}")`;
}

export const runnerService: ServiceImpl<typeof RunnerService> = {
  async complete(req, ctx) {
    const lease = await leaseOf(ctx, req.leaseId);
    let res: ExecuteResponse;
    if (req.outcome.case === "response") {
      res = req.outcome.value;
      if (res.cachedResult) throw invalidArgument("a runner's result is never a cached result", "response.cached_result");
      if (res.result && (res.status?.code ?? 0) === 0) {
        const store = new BlobStore(kilnEnv(), lease.tenant);
        // Touching, as UpdateActionResult does: the result becomes an action-cache entry.
        const missing = await store.index.missing(await referencedBlobs({ store }, res.result), true);
        if (missing.length) throw missingBlobs(`the result references ${missing.length} blob(s) not in the CAS; upload them first`, missing.map(missingSubject));
      }
      stampWorker(res, lease);
      // Clients show `message`; a runner's status alone would go unseen.
      if (res.status && res.status.code !== 0 && !res.message) res.message = res.status.message;
    } else if (req.outcome.case === "error") {
      if (req.outcome.value.code === 0) throw invalidArgument("error must carry a non-OK code", "error.code");
      res = create(ExecuteResponseSchema, { status: req.outcome.value, message: req.outcome.value.message });
    } else {
      throw invalidArgument("Complete needs a response or an error", "outcome");
    }
    return poolStub(kilnEnv(), lease.shard).complete(lease.leaseId, toBinary(ExecuteResponseSchema, res));
  },

  async appendLog(req, ctx) {
    const lease = await leaseOf(ctx, req.leaseId);
    if (req.stream !== LogStream.STDOUT && req.stream !== LogStream.STDERR) throw invalidArgument("stream must be STDOUT or STDERR", "stream");
    if (req.offset < 0n || req.offset > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument("offset is out of range", "offset");
    if (req.data.byteLength > MAX_LOG_APPEND) throw invalidArgument(`data is over ${MAX_LOG_APPEND} bytes`, "data");
    const env = kilnEnv();
    const size = await storedOperationStub(env, lease.operation).appendLog(
      lease.attempt,
      req.stream === LogStream.STDOUT ? "stdout" : "stderr",
      Number(req.offset),
      req.data,
      req.finished,
    );
    return { committedSize: BigInt(size) };
  },
};
