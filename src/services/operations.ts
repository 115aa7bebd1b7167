// google.longrunning.Operations over execution operations: Get, List, Cancel, Delete, Wait.
import { create, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ExecutionStage_Value } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { Operations, OperationSchema, type Operation } from "../gen/google/longrunning/operations_pb.ts";
import { authenticate, presentedKey, resolvePrincipal } from "../auth.ts";
import { keyConfig, kilnEnv } from "../config.ts";
import { invalidArgument } from "../errors.ts";
import { watchOperation, notFoundOperation } from "../execution/watch.ts";
import { listOperations, type ListCursor, type ListFilter } from "../storage/operation-index.ts";
import { authorizeOperation } from "./execution.ts";
import { checkLeaseUse } from "./scope.ts";

const MAX_PAGE = 1000;
/** WaitOperation without a timeout waits at most this long, then returns the current state. */
const DEFAULT_WAIT_MS = 60_000;
const MAX_WAIT_MS = 10 * 60_000;

/** AIP-160-style filters: `done=true`, `done = false`, `stage=EXECUTING`, joined with AND. */
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
    } else {
      throw invalidArgument(`cannot filter on "${field}" (done, stage, instance_name)`, "filter");
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

export const operationsService: ServiceImpl<typeof Operations> = {
  async listOperations(req, ctx) {
    if (req.name !== "operations" && req.name !== "") throw invalidArgument(`list operations under "operations", not "${req.name}"`, "name");
    if (req.pageSize < 0) throw invalidArgument("page_size must not be negative", "page_size");
    const principal = await resolvePrincipal(await keyConfig(), presentedKey(ctx.requestHeader.get("authorization")));
    authenticate(principal);
    checkLeaseUse(principal, ctx, "");
    const filter = parseOperationFilter(req.filter);
    const pageSize = Math.min(req.pageSize || 100, MAX_PAGE);
    const env = kilnEnv();
    const rows = await listOperations(env, { ...filter, tenant: principal.tenant }, pageSize + 1, decodeCursor(req.pageToken, req.filter));
    const page = rows.slice(0, pageSize);
    const ops: Operation[] = [];
    for (const row of page) {
      const bytes = await env.OPERATION.get(env.OPERATION.idFromName(row.name)).operation();
      if (bytes) ops.push(fromBinary(OperationSchema, bytes));
    }
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
    await authorizeOperation(ctx, req.name, "read");
    let waitMs = DEFAULT_WAIT_MS;
    if (req.timeout) {
      waitMs = Number(req.timeout.seconds) * 1000 + Math.floor(req.timeout.nanos / 1e6);
      if (waitMs < 0) throw invalidArgument("timeout must not be negative", "timeout");
      waitMs = Math.min(waitMs, MAX_WAIT_MS);
    }
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), waitMs);
    ctx.signal.addEventListener("abort", () => stop.abort());
    let latest: Operation | undefined;
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
    if (!latest) throw new ConnectError(`operation ${req.name} did not answer in time`, Code.DeadlineExceeded);
    return create(OperationSchema, latest);
  },
};
