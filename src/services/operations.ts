// google.longrunning.Operations over execution operations: Get, List, Cancel, Delete, Wait.
import { create, fromBinary } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ExecutionStage_Value } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { Operations, OperationSchema, type Operation } from "../gen/google/longrunning/operations_pb.ts";
import { authorize, type Principal } from "../auth.ts";
import { requireCaller } from "../caller.ts";
import { kilnEnv } from "../config.ts";
import { invalidArgument } from "../errors.ts";
import { storedOperationStub } from "../execution/operation-stub.ts";
import { watchOperation, notFoundOperation } from "../execution/watch.ts";
import { listOperations, type ListCursor, type ListFilter } from "../storage/operation-index.ts";
import { authorizeOperation } from "./execution.ts";
import { checkLeaseUse } from "./scope.ts";

const MAX_PAGE = 1000;
/** WaitOperation without a timeout waits at most this long, then returns the current state. */
const DEFAULT_WAIT_MS = 60_000;
const MAX_WAIT_MS = 10 * 60_000;

/**
 * AIP-160-style filters: `done=true`, `done = false`, `stage=EXECUTING`, `instance_name=x`,
 * `tool_invocation_id=<Bazel's invocation id>` (the build's actions), joined with AND.
 */
export function parseOperationFilter(filter: string): Omit<ListFilter, "tenant"> {
  const out: Omit<ListFilter, "tenant"> = {};
  if (!filter.trim()) return out;
  for (const term of filter.split(/\s+AND\s+/i)) {
    const m = /^\s*([a-z_.]+)\s*=\s*"?([A-Za-z_0-9/.-]*)"?\s*$/i.exec(term);
    if (!m) throw invalidArgument(`filter term "${term}" is not field=value`, "filter");
    const [, field, value] = m;
    if (field === "done") {
      if (value !== "true" && value !== "false") throw invalidArgument("done must be true or false", "filter");
      out.done = value === "true";
    } else if (field === "stage" || field === "metadata.stage") {
      const stage = ExecutionStage_Value[value!.toUpperCase() as keyof typeof ExecutionStage_Value];
      if (stage === undefined) throw invalidArgument(`unknown stage "${value}" (CACHE_CHECK, QUEUED, EXECUTING, COMPLETED)`, "filter");
      out.stage = stage;
    } else if (field === "instance_name" || field === "instanceName") {
      out.instanceName = value;
    } else if (field === "tool_invocation_id" || field === "toolInvocationId") {
      out.toolInvocationId = value;
    } else {
      throw invalidArgument(`cannot filter on "${field}" (done, stage, instance_name, tool_invocation_id)`, "filter");
    }
  }
  return out;
}

const b64url = (s: string) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64url = (s: string) => atob(s.replace(/-/g, "+").replace(/_/g, "/"));

function decodeCursor(token: string, filter: string): ListCursor | undefined {
  if (!token) return undefined;
  try {
    const c = JSON.parse(unb64url(token)) as ListCursor & { f: string };
    if (c.f !== filter || typeof c.createdAt !== "number" || typeof c.name !== "string") throw new Error();
    return { createdAt: c.createdAt, name: c.name };
  } catch {
    throw invalidArgument("page_token is not one this server issued for this filter", "page_token");
  }
}

const mayUse = (p: Principal, instanceName: string) => {
  try {
    authorize(p, instanceName, "read");
    return true;
  } catch {
    return false;
  }
};

export const operationsService: ServiceImpl<typeof Operations> = {
  async listOperations(req, ctx) {
    // "operations", or "{instance_name}/operations": the instance then filters like instance_name=.
    const parent = /^(?:(.+)\/)?operations$/.exec(req.name);
    if (req.name !== "" && !parent) throw invalidArgument(`list operations under "operations" or "{instance_name}/operations", not "${req.name.slice(0, 200)}"`, "name");
    if (req.pageSize < 0) throw invalidArgument("page_size must not be negative", "page_size");
    const principal = await requireCaller(ctx.requestHeader, ctx.url);
    checkLeaseUse(principal, ctx, "");
    const filter = parseOperationFilter(req.filter);
    if (parent?.[1]) {
      if (filter.instanceName !== undefined && filter.instanceName !== parent[1]) return { operations: [], nextPageToken: "" };
      filter.instanceName = parent[1];
    }
    const pageSize = Math.min(req.pageSize || 100, MAX_PAGE);
    const env = kilnEnv();
    const rows = await listOperations(env, { ...filter, tenant: principal.tenant }, pageSize + 1, decodeCursor(req.pageToken, req.filter));
    const page = rows.slice(0, pageSize);
    // Only what the key may read: its instance prefixes apply here as to GetOperation.
    const visible = page.filter((row) => mayUse(principal, row.instanceName));
    const ops: Operation[] = (await Promise.all(visible.map((row) => storedOperationStub(env, row.name).operation())))
      .flatMap((b) => (b ? [fromBinary(OperationSchema, b as Uint8Array)] : []));
    const last = page[page.length - 1];
    const nextPageToken = rows.length > pageSize && last ? b64url(JSON.stringify({ createdAt: last.createdAt, name: last.name, f: req.filter })) : "";
    return { operations: ops, nextPageToken };
  },

  async getOperation(req, ctx) {
    const stub = await authorizeOperation(ctx, req.name, "read");
    const bytes = await stub.operation();
    if (!bytes) throw notFoundOperation(req.name);
    return fromBinary(OperationSchema, bytes);
  },

  async deleteOperation(req, ctx) {
    const stub = await authorizeOperation(ctx, req.name, "write");
    await stub.delete();
    return {};
  },

  async cancelOperation(req, ctx) {
    const stub = await authorizeOperation(ctx, req.name, "write");
    if (!(await stub.cancel())) throw notFoundOperation(req.name);
    return {};
  },

  async waitOperation(req, ctx) {
    const stub = await authorizeOperation(ctx, req.name, "read");
    let waitMs = DEFAULT_WAIT_MS;
    if (req.timeout) {
      waitMs = Number(req.timeout.seconds) * 1000 + Math.floor(req.timeout.nanos / 1e6);
      if (waitMs < 0) throw invalidArgument("timeout must not be negative", "timeout");
      waitMs = Math.min(waitMs, MAX_WAIT_MS);
    }
    // The latest state first: a zero or short timeout, or a finished operation, answers with it.
    const now = await stub.operation();
    if (!now) throw notFoundOperation(req.name);
    let latest = fromBinary(OperationSchema, now);
    if (latest.done || waitMs === 0) return latest;
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), waitMs);
    ctx.signal.addEventListener("abort", () => stop.abort());
    try {
      const it = watchOperation(kilnEnv(), req.name, stop.signal)[Symbol.asyncIterator]();
      const aborted = new Promise<void>((r) => stop.signal.addEventListener("abort", () => r()));
      for (;;) {
        const next = await Promise.race([it.next(), aborted.then(() => null)]);
        if (!next || next.done) break;
        latest = next.value;
        if (latest.done) break;
      }
      void it.return?.(undefined);
    } finally {
      clearTimeout(timer);
    }
    return create(OperationSchema, latest);
  },
};
