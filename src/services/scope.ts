// What every service method needs about its caller: who it is and where its data lives.
import type { HandlerContext } from "@connectrpc/connect";
import { authorize, authorizeWrite, type Access, type Principal } from "../auth.ts";
import { note } from "../access-log.ts";
import { Code, ConnectError } from "../errors.ts";
import { requireCaller } from "../caller.ts";
import { kilnEnv } from "../config.ts";
import type { Env } from "../env.ts";
import { BlobStore } from "../storage/blob-store.ts";
import { parseInstanceName } from "../storage/instance-name.ts";

export interface Scope {
  env: Env;
  principal: Principal;
  instanceName: string;
  store: BlobStore;
}

/**
 * Authenticates the caller (from the Authorization header of whatever surface carried the call),
 * validates the instance name and checks the key may use it.
 */
export async function scopeFor(ctx: HandlerContext, instanceName: string, access: Access): Promise<Scope> {
  const principal = await requireCaller(ctx.requestHeader, ctx.url);
  const name = parseInstanceName(instanceName);
  note(ctx.requestHeader, { instance: name });
  if (principal.lease) checkLeaseUse(principal, ctx, name);
  authorize(principal, name, access);
  const env = kilnEnv();
  return { env, principal, instanceName: name, store: new BlobStore(env, principal.tenant) };
}

/** What a runner's lease token may do: the CAS of its operation's instance, and report on the lease. */
const LEASE_SERVICES = new Set([
  "build.bazel.remote.execution.v2.ContentAddressableStorage",
  "build.bazel.remote.execution.v2.Capabilities",
  "google.bytestream.ByteStream",
  "kiln.runner.v1.RunnerService",
]);

export function checkLeaseUse(principal: Principal, ctx: HandlerContext, instanceName: string): void {
  if (!principal.lease) return;
  if (!LEASE_SERVICES.has(ctx.service.typeName)) {
    throw new ConnectError(`a runner lease token may not call ${ctx.service.typeName}`, Code.PermissionDenied);
  }
  if (instanceName !== principal.lease.instanceName) {
    throw new ConnectError(`this lease token is for instance "${principal.lease.instanceName}", not "${instanceName}"`, Code.PermissionDenied);
  }
}

export interface ResultStoreScope {
  env: Env;
  principal: Principal;
}

/**
 * ResultStore callers: a valid key where keys are configured (uploads need read-write). Instance
 * prefixes do not apply to ResultStore; the key's tenant isolates its invocations.
 */
export async function resultStoreScope(ctx: HandlerContext, access: Access): Promise<ResultStoreScope> {
  const principal = await requireCaller(ctx.requestHeader, ctx.url);
  checkLeaseUse(principal, ctx, "");
  if (access === "write") authorizeWrite(principal);
  return { env: kilnEnv(), principal };
}
