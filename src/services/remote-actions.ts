// kiln.invocation.v1.RemoteActions: which actions a build looked up in the action cache, wrote to
// it or executed, linked to its invocation by RequestMetadata.tool_invocation_id (the id Bazel
// also gives its Build Event stream, hence its ResultStore invocation).
//
// Recording is a side effect of the cache and execution calls and never slows or fails them: it
// runs after the answer (waitUntil), once, and a failed recording is logged and lost. The counts
// are a view of the build, not a ledger; a retry could count a call twice, which is worse.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { waitUntil } from "cloudflare:workers";
import { mayUseInstance } from "../auth.ts";
import { invalidArgument } from "../errors.ts";
import { callOrigin } from "../execution/request-metadata.ts";
import { faultPoint } from "../execution/faults.ts";
import { RemoteActions, RemoteActionSchema } from "../gen/kiln/invocation/v1/remote_actions_pb.ts";
import { checkInvocationId, isUuid345 } from "../resultstore/ids.ts";
import { invocationStub } from "../resultstore/invocation-rpc.ts";
import { counts, decodeToken, encodeToken } from "../resultstore/page-token.ts";
import type { RemoteCallKind } from "../resultstore/remote-actions.ts";
import { resultStoreScope, type Scope } from "./scope.ts";

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

/** Counts a call on `action` for the invocation its RequestMetadata names, if it names one. */
export function noteRemoteCall(s: Scope, headers: Headers, action: { hash: string; size?: number }, kind: RemoteCallKind, operation?: string): void {
  const origin = callOrigin(headers);
  // Bazel's invocation ids are UUIDs, as ResultStore's are; anything else names no invocation.
  if (!isUuid345(origin.toolInvocationId) || action.size === undefined) return;
  const call = {
    instanceName: s.instanceName,
    hash: action.hash,
    size: action.size,
    kind,
    targetId: origin.targetId,
    actionMnemonic: origin.actionMnemonic,
    operation,
    at: Date.now(),
  };
  const record = async () => {
    faultPoint("invocation.remoteCall");
    await invocationStub(s.env, s.principal.tenant, origin.toolInvocationId.toLowerCase()).recordRemoteCall(call);
  };
  waitUntil(record().catch((e) => console.warn(`remote action of invocation ${origin.toolInvocationId} not recorded: ${(e as Error).message}`)));
}

const pageOf = (token: string) => (token ? decodeToken(token, counts("s")).s : 0);

export const remoteActionsService: ServiceImpl<typeof RemoteActions> = {
  async listRemoteActions(req, ctx: HandlerContext) {
    const { env, principal } = await resultStoreScope(ctx, "read");
    const m = /^invocations\/([^/]+)$/.exec(req.name);
    if (!m) throw invalidArgument(`name "${req.name}" is not "invocations/{invocation_id}"`, "name");
    const id = checkInvocationId(m[1]!, "name");
    if (req.pageSize < 0) throw invalidArgument("page_size must not be negative", "page_size");
    const limit = Math.min(req.pageSize || DEFAULT_PAGE, MAX_PAGE);
    const page = await invocationStub(env, principal.tenant, id).listRemoteActions(pageOf(req.pageToken), limit);
    const last = page.rows.at(-1);
    return {
      // A key limited to some instances sees only their actions (the totals are the invocation's).
      remoteActions: page.rows
        .filter((r) => mayUseInstance(principal, r.instanceName))
        .map((r) =>
          create(RemoteActionSchema, {
            instanceName: r.instanceName,
            actionDigest: { hash: r.hash, sizeBytes: BigInt(r.size) },
            targetId: r.targetId,
            actionMnemonic: r.actionMnemonic,
            cacheHits: BigInt(r.hits),
            cacheMisses: BigInt(r.misses),
            cacheWrites: BigInt(r.writes),
            executions: BigInt(r.executions),
            lastOperation: r.lastOperation,
            firstCallTime: timestampFromMs(r.firstAt),
            lastCallTime: timestampFromMs(r.lastAt),
          }),
        ),
      nextPageToken: page.more && last ? encodeToken({ s: last.seq }) : "",
      totalActions: BigInt(page.totals.actions),
      totalCacheHits: BigInt(page.totals.hits),
      totalCacheMisses: BigInt(page.totals.misses),
      totalCacheWrites: BigInt(page.totals.writes),
      totalExecutions: BigInt(page.totals.executions),
    };
  },
};
