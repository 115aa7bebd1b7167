// The reads behind ResultStoreDownload's Get and List methods: the caller, authenticated once per
// call; the invocation's Durable Object, read (NOT_FOUND when the invocation does not exist); one
// resource by name; one page of a list by seq, filtered and masked. Lists resume after the last
// row's position (its seq, and under a `-` wildcard its parents' seqs), so rows added meanwhile
// are never repeated.
import { create, fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { notFound } from "../errors.ts";
import { resultStoreScope, type ResultStoreScope } from "../services/scope.ts";
import { checkInvocationId } from "./ids.ts";
import { invocationStub } from "./invocation-rpc.ts";
import { listFilter } from "./list-filter.ts";
import { canonicalName, parseName, type ResourceKind } from "./names.ts";
import { encodeToken } from "./page-token.ts";
import { listStart, pageSize, type PageStart } from "./paging.ts";
import type { ReadQuery, ReadResult } from "./read-store.ts";
import { responseMask } from "./response-mask.ts";

const scopes = new WeakMap<HandlerContext, Promise<ResultStoreScope>>();

/**
 * The caller, authenticated once per call: every method checks it first (an unauthenticated call
 * learns nothing about its request), and each read of the call reuses it.
 */
export function caller(ctx: HandlerContext): Promise<ResultStoreScope> {
  let s = scopes.get(ctx);
  if (!s) scopes.set(ctx, (s = resultStoreScope(ctx, "read")));
  return s;
}

/** One read of the caller's invocation; NOT_FOUND when it does not exist. */
export async function readInvocation(ctx: HandlerContext, invocationId: string, q: ReadQuery): Promise<ReadResult> {
  const { env, principal } = await caller(ctx);
  const r = await invocationStub(env, principal.tenant, invocationId).read(q);
  if (!r.exists) throw notFound(`invocation "invocations/${invocationId}" not found`);
  return r;
}

/** Get of one resource by name: NOT_FOUND when it (or its invocation) does not exist. */
export async function getOne<D extends DescMessage>(ctx: HandlerContext, name: string, kind: ResourceKind, schema: D): Promise<MessageShape<D>> {
  const mask = responseMask(ctx, schema);
  const key = parseName(name, kind, "name");
  const r = await readInvocation(ctx, checkInvocationId(key.invocationId, "name"), { op: "get", names: [canonicalName(name, kind)] });
  const row = r.rows[0];
  if (!row) throw notFound(`${kind} "${name}" not found`);
  return mask.apply(schema, fromBinary(schema, row.data) as MessageShape<D>);
}

export interface ListSpec<R extends DescMessage> {
  kind: ResourceKind;
  item: DescMessage;
  response: R;
  /** The response's repeated field, e.g. "targets". */
  collection: string;
  invocationId: string;
  targetId?: string;
  configId?: string;
  /** A parent resource that must exist (NOT_FOUND otherwise). */
  parent?: string;
}

/** One page of a list by seq, filtered, masked; the token resumes after the last row looked at. */
export async function listPage<R extends DescMessage>(
  ctx: HandlerContext,
  spec: ListSpec<R>,
  req: { pageSize: number; pageStart: unknown; filter?: string },
): Promise<MessageShape<R>> {
  const mask = responseMask(ctx, spec.response);
  const filter = listFilter(req.filter ?? "", spec.item, spec.collection, mask);
  const limit = pageSize(req.pageSize);
  const { after, offset } = listStart(req.pageStart as PageStart);
  const invocationId = checkInvocationId(spec.invocationId, "parent");
  if (spec.parent) {
    const p = await readInvocation(ctx, invocationId, { op: "get", names: [spec.parent] });
    if (p.rows.length === 0) throw notFound(`"${spec.parent}" not found`);
  }
  const r = await readInvocation(ctx, invocationId, { op: "list", kind: spec.kind, targetId: spec.targetId, configId: spec.configId, after, offset, limit });
  const items = r.rows.map((row) => fromBinary(spec.item, row.data)).filter(filter);
  const out = create(spec.response, {
    [spec.collection]: items,
    nextPageToken: r.more && r.cursor ? encodeToken({ ...r.cursor }) : "",
  } as never);
  return mask.apply(spec.response, out as MessageShape<R>);
}
