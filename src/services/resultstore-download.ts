// google.devtools.resultstore.v2.ResultStoreDownload. Reads of one invocation go to its
// InvocationDO (src/resultstore/read-store.ts); searches across invocations go to the D1 index
// (src/resultstore/search-index.ts). Every method but GetInvocationDownloadMetadata requires a
// response field mask, as the API says (SearchConfiguredTargets: only the fields its comment lists).
// Paging: page sizes are capped at MAX_PAGE (0 means that cap); page tokens are opaque and checked
// (anything else is INVALID_ARGUMENT); offsets work on every method, BatchListActions and
// TraverseFileSets included. Lists resume after the last row's position (its seq, and under a `-`
// wildcard its parents' seqs), so rows added meanwhile are never repeated; searches resume after
// the last row's (start time, name), so newer invocations arriving meanwhile do not shift the
// pages; ExportInvocation resumes after its last row in export order; TraverseFileSets pages by
// position. The List methods' `filter` is the search syntax evaluated per resource
// (src/resultstore/list-filter.ts); the export filters take one `id.… = "…"` each, as the proto
// describes.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { create, fromBinary, type DescMessage, type Message, type MessageShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { invalidArgument, notFound } from "../errors.ts";
import { ActionSchema, type Action } from "../gen/google/devtools/resultstore/v2/action_pb.ts";
import { ConfigurationSchema } from "../gen/google/devtools/resultstore/v2/configuration_pb.ts";
import { ConfiguredTargetSchema } from "../gen/google/devtools/resultstore/v2/configured_target_pb.ts";
import { DownloadMetadataSchema, type DownloadMetadata } from "../gen/google/devtools/resultstore/v2/download_metadata_pb.ts";
import { FileSetSchema, type FileSet } from "../gen/google/devtools/resultstore/v2/file_set_pb.ts";
import { InvocationSchema, type Invocation } from "../gen/google/devtools/resultstore/v2/invocation_pb.ts";
import {
  BatchListActionsResponseSchema,
  ExportInvocationResponseSchema,
  ListActionsResponseSchema,
  ListConfigurationsResponseSchema,
  ListConfiguredTargetsResponseSchema,
  ListFileSetsResponseSchema,
  ListTargetsResponseSchema,
  ResultStoreDownload,
  SearchConfiguredTargetsResponseSchema,
  SearchInvocationsResponseSchema,
  TraverseFileSetsResponseSchema,
} from "../gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { TargetSchema } from "../gen/google/devtools/resultstore/v2/target_pb.ts";
import { checkInvocationId } from "../resultstore/ids.ts";
import { listFilter } from "../resultstore/list-filter.ts";
import { nameOf, parseName, type ResourceKind } from "../resultstore/names.ts";
import { PAGE_BYTES, type ListCursor, type ReadQuery, type ReadResult, type ReadRow } from "../resultstore/read-store.ts";
import { counts, decodeToken, encodeToken, type TokenPosition } from "../resultstore/page-token.ts";
import { optionalResponseMask, responseMask } from "../resultstore/response-mask.ts";
import { searchIndex } from "../resultstore/search-index.ts";
import { resultStoreScope, type ResultStoreScope } from "./scope.ts";
import { MAX_LIST_OFFSET } from "./limits.ts";

const MAX_PAGE = 1000;
/** The only response fields SearchConfiguredTargets supports in its mask (the proto's list). */
const SEARCH_CONFIGURED_TARGET_FIELDS = [
  "configured_targets.name",
  "configured_targets.id",
  "configured_targets.status_attributes",
  "configured_targets.timing",
  "next_page_token",
];

// ---- paging ----

type PageStart = { case: "pageToken"; value: string } | { case: "offset"; value: bigint } | { case: undefined; value?: undefined };

const pageSize = (n: number) => {
  if (n < 0) throw invalidArgument("page_size must not be negative", "page_size");
  return n === 0 ? MAX_PAGE : Math.min(n, MAX_PAGE);
};

/** The one integer `key` of a token of this method. */
const tokenCount = (token: string, key: string) => decodeToken(token, counts(key))[key]!;

/** Where a list starts: after a seq (token) and/or skipping `offset` rows. An empty token is the start. */
function listStart(start: PageStart): { after: ListCursor; offset: number } {
  if (start.case === "pageToken" && start.value) return { after: decodeToken(start.value, counts("t", "c", "s")), offset: 0 };
  if (start.case === "offset") return { after: { t: 0, c: 0, s: 0 }, offset: offsetOf(start.value) };
  return { after: { t: 0, c: 0, s: 0 }, offset: 0 };
}

/** Where a positional list (export, search) starts. */
function positionStart(start: PageStart): number {
  if (start.case === "pageToken" && start.value) return tokenCount(start.value, "o");
  if (start.case === "offset") return offsetOf(start.value);
  return 0;
}

function offsetOf(v: bigint): number {
  if (v < 0n || v > BigInt(MAX_LIST_OFFSET)) throw invalidArgument(`offset must be between 0 and ${MAX_LIST_OFFSET} (MAX_LIST_OFFSET)`, "offset");
  return Number(v);
}

// ---- the invocation's object ----

const scopes = new WeakMap<HandlerContext, Promise<ResultStoreScope>>();

/**
 * The caller, authenticated once per call: every method checks it first (an unauthenticated call
 * learns nothing about its request), and each read of the call reuses it.
 */
function caller(ctx: HandlerContext): Promise<ResultStoreScope> {
  let s = scopes.get(ctx);
  if (!s) scopes.set(ctx, (s = resultStoreScope(ctx, "read")));
  return s;
}

async function readInvocation(ctx: HandlerContext, invocationId: string, q: ReadQuery): Promise<ReadResult> {
  const { env, principal } = await caller(ctx);
  const stub = env.INVOCATION.get(env.INVOCATION.idFromName(`${principal.tenant}\n${invocationId}`));
  const r = await stub.read(q);
  if (!r.exists) throw notFound(`invocation "invocations/${invocationId}" not found`);
  return r;
}

const invocationIdOf = (id: string, field: string) => checkInvocationId(id, field);

/** Get of one resource by name: NOT_FOUND when it (or its invocation) does not exist. */
async function getOne<D extends DescMessage>(ctx: HandlerContext, name: string, kind: ResourceKind, schema: D): Promise<MessageShape<D>> {
  const mask = responseMask(ctx, schema);
  const key = parseName(name, kind, "name");
  const r = await readInvocation(ctx, invocationIdOf(key.invocationId, "name"), { op: "get", names: [canonical(name, kind)] });
  const row = r.rows[0];
  if (!row) throw notFound(`${kind} "${name}" not found`);
  return mask.apply(schema, fromBinary(schema, row.data) as MessageShape<D>);
}

/** The stored spelling of a name (ids url-encoded, the invocation's UUID in lower case), whatever spelling the client used. */
const canonical = (name: string, kind: ResourceKind) => {
  const k = parseName(name, kind, "name");
  return nameOf({ ...k, invocationId: k.invocationId.toLowerCase() });
};

interface ListSpec<R extends DescMessage> {
  kind: ResourceKind;
  item: DescMessage;
  response: R;
  collection: string;
  invocationId: string;
  targetId?: string;
  configId?: string;
  /** A parent resource that must exist (NOT_FOUND otherwise). */
  parent?: string;
}

/** One page of a list by seq, filtered, masked; the token resumes after the last row looked at. */
async function listPage<R extends DescMessage>(
  ctx: HandlerContext,
  spec: ListSpec<R>,
  req: { pageSize: number; pageStart: PageStart; filter?: string },
): Promise<MessageShape<R>> {
  const mask = responseMask(ctx, spec.response);
  const filter = listFilter(req.filter ?? "", spec.item, spec.collection, mask);
  const limit = pageSize(req.pageSize);
  const { after, offset } = listStart(req.pageStart);
  const invocationId = invocationIdOf(spec.invocationId, "parent");
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

const wildcard = (id: string) => (id === "-" ? undefined : id);

/** Parses a parent name whose ids may be `-`. */
function parentIds(parent: string, shape: "invocation" | "target" | "configuredTarget"): { invocationId: string; targetId?: string; configId?: string } {
  const parts = parent.split("/");
  const expected = { invocation: ["invocations"], target: ["invocations", "targets"], configuredTarget: ["invocations", "targets", "configuredTargets"] }[shape];
  if (parts.length !== expected.length * 2 || expected.some((l, i) => parts[2 * i] !== l) || parts.some((p, i) => i % 2 === 1 && !p)) {
    throw invalidArgument(`"${parent}" is not a valid parent (${expected.map((l) => `${l}/{id}`).join("/")})`, "parent");
  }
  let ids: string[];
  try {
    ids = parts.filter((_, i) => i % 2 === 1).map((s) => decodeURIComponent(s));
  } catch {
    throw invalidArgument(`"${parent}" has an id that is not url-encoded`, "parent");
  }
  return { invocationId: ids[0]!.toLowerCase(), targetId: ids[1] === undefined ? undefined : wildcard(ids[1]), configId: ids[2] === undefined ? undefined : wildcard(ids[2]) };
}

const enc = encodeURIComponent;

/** One page of a search in the D1 index; positional page tokens. */
async function search(
  ctx: HandlerContext,
  kind: "invocation" | "configuredTarget",
  req: { pageSize: number; pageStart: unknown; query: string; exactMatch: boolean; projectId: string },
  response: DescMessage,
  only?: string[],
) {
  const { env, principal } = await caller(ctx);
  const mask = responseMask(ctx, response, only);
  if (!req.query.trim()) throw invalidArgument("a query is required", "query");
  const limit = pageSize(req.pageSize);
  const start = req.pageStart as PageStart;
  const after = start.case === "pageToken" && start.value ? decodeToken(start.value, isSearchCursor) : undefined;
  const offset = start.case === "offset" ? offsetOf(start.value) : 0;
  const r = await searchIndex(env.INDEX, principal.tenant, kind, req.query, {
    exactMatch: req.exactMatch,
    offset,
    limit,
    after: after && { key: after.k, name: after.n },
    projectId: req.projectId,
  });
  return { mask, items: r.items, next: r.more && r.last ? encodeToken({ k: r.last.key, n: r.last.name }) : "" };
}

/** Search tokens hold the last row's sort key and name (keyset paging: new rows cannot shift pages). */
const isSearchCursor = (pos: TokenPosition): pos is { k: number | null; n: string } =>
  (pos["k"] === null || (typeof pos["k"] === "number" && Number.isSafeInteger(pos["k"]))) && typeof pos["n"] === "string";

// ---- file set traversal ----

/** File sets per DO read: each may be ~2 MB, and a DO RPC answer at most 32 MiB. */
const GET_CHUNK = 8;

/** FileSets reachable from `start` (names), breadth first, each once, with their sizes; missing ones are skipped. */
async function traverse(ctx: HandlerContext, invocationId: string, start: string[]): Promise<{ set: FileSet; bytes: number }[]> {
  const seen = new Set<string>();
  const out: { set: FileSet; bytes: number }[] = [];
  let frontier = start;
  while (frontier.length) {
    const names = [...new Set(frontier.map((n) => safeCanonical(n, "fileSet")).filter((n): n is string => !!n))].filter((n) => !seen.has(n));
    names.forEach((n) => seen.add(n));
    if (!names.length) break;
    const found: FileSet[] = [];
    for (let i = 0; i < names.length; i += GET_CHUNK) {
      const r = await readInvocation(ctx, invocationId, { op: "get", names: names.slice(i, i + GET_CHUNK) });
      for (const row of r.rows) {
        const set = fromBinary(FileSetSchema, row.data);
        found.push(set);
        out.push({ set, bytes: row.data.byteLength });
      }
    }
    frontier = found.flatMap((s) => s.fileSets);
  }
  return out;
}

function safeCanonical(name: string, kind: ResourceKind): string | null {
  try {
    return canonical(name, kind);
  } catch {
    return null;
  }
}

/** The invocation's upload status and when it was created, finalized and became immutable. */
function downloadMetadataOf(id: string, r: ReadResult): DownloadMetadata {
  const at = (ms: number | undefined) => (ms === undefined ? undefined : timestampFromMs(ms));
  return create(DownloadMetadataSchema, {
    name: `invocations/${enc(id)}/downloadMetadata`,
    uploadStatus: r.uploadStatus,
    createTime: at(r.statusTimes.create),
    finalizeTime: at(r.statusTimes.finalize),
    immutableTime: at(r.statusTimes.immutable),
  });
}

const methods: ServiceImpl<typeof ResultStoreDownload> = {
  async getInvocation(req, ctx) {
    return getOne(ctx, req.name, "invocation", InvocationSchema);
  },

  async getInvocationDownloadMetadata(req, ctx) {
    const m = /^(invocations\/[^/]+)\/downloadMetadata$/.exec(req.name);
    if (!m) throw invalidArgument(`"${req.name}" is not a download metadata name (invocations/{invocation}/downloadMetadata)`, "name");
    const key = parseName(m[1]!, "invocation", "name");
    const id = invocationIdOf(key.invocationId, "name");
    const r = await readInvocation(ctx, id, { op: "get", names: [] });
    const out = downloadMetadataOf(id, r);
    // No mask is required here (the proto lists none), but one that is given applies.
    const mask = optionalResponseMask(ctx, DownloadMetadataSchema);
    return mask ? mask.apply(DownloadMetadataSchema, out) : out;
  },

  async searchInvocations(req, ctx) {
    const r = await search(ctx, "invocation", req, SearchInvocationsResponseSchema);
    return r.mask.apply(SearchInvocationsResponseSchema, create(SearchInvocationsResponseSchema, { invocations: r.items.map((b) => fromBinary(InvocationSchema, b)), nextPageToken: r.next }));
  },

  async searchConfiguredTargets(req, ctx) {
    if (req.parent !== "invocations/-/targets/-") throw invalidArgument("parent must be invocations/-/targets/-", "parent");
    const r = await search(ctx, "configuredTarget", req, SearchConfiguredTargetsResponseSchema, SEARCH_CONFIGURED_TARGET_FIELDS);
    return r.mask.apply(
      SearchConfiguredTargetsResponseSchema,
      create(SearchConfiguredTargetsResponseSchema, { configuredTargets: r.items.map((b) => fromBinary(ConfiguredTargetSchema, b)), nextPageToken: r.next }),
    );
  },

  async exportInvocation(req, ctx) {
    const mask = responseMask(ctx, ExportInvocationResponseSchema);
    const key = parseName(req.name, "invocation", "name");
    const id = invocationIdOf(key.invocationId, "name");
    const eq = (filter: string, field: string, param: string) => {
      if (!filter.trim()) return undefined;
      const m = new RegExp(`^\\s*${field.replace(/\./g, "\\.")}\\s*=\\s*(?:"([^"]*)"|(\\S+))\\s*$`).exec(filter);
      if (!m) throw invalidArgument(`${param}: only a single ${field} = "…" restriction is supported`, param);
      return m[1] ?? m[2];
    };
    const targetId = eq(req.targetsFilter, "id.target_id", "targets_filter");
    const configId = eq(req.configuredTargetsFilter, "id.configuration_id", "configured_targets_filter");
    const actionId = eq(req.actionsFilter, "id.action_id", "actions_filter");
    if (configId !== undefined && targetId === undefined) throw invalidArgument("configured_targets_filter requires targets_filter", "configured_targets_filter");
    if (actionId !== undefined && (targetId === undefined || configId === undefined)) {
      throw invalidArgument("actions_filter requires targets_filter and configured_targets_filter", "actions_filter");
    }
    const limit = pageSize(req.pageSize);
    // A token resumes after its row in export order (rows added meanwhile cannot shift pages); an
    // offset counts positions, the invocation being the first.
    const start = req.pageStart as PageStart;
    const after = start.case === "pageToken" && start.value ? decodeToken(start.value, counts("g", "t", "c", "k", "s")) : undefined;
    const offset = start.case === "offset" ? offsetOf(start.value) : 0;
    const first = !after && offset === 0;
    // The invocation and its download metadata count once towards page_size, on the first page.
    const r = await readInvocation(ctx, id, {
      op: "export",
      after: after ?? { g: 0, t: 0, c: 0, k: 0, s: 0 },
      offset: first || after ? 0 : offset - 1,
      limit: first ? limit - 1 : limit,
      targetId,
      configId,
      actionId,
    });
    const inv = first ? (await readInvocation(ctx, id, { op: "get", names: [`invocations/${enc(id)}`] })).rows[0] : undefined;
    const pick = (kind: ResourceKind, schema: DescMessage) => r.rows.filter((row: ReadRow) => row.kind === kind).map((row) => fromBinary(schema, row.data) as Message);
    const out = create(ExportInvocationResponseSchema, {
      invocation: inv ? (fromBinary(InvocationSchema, inv.data) as Invocation) : undefined,
      downloadMetadata: first ? downloadMetadataOf(id, r) : undefined,
      targets: pick("target", TargetSchema) as never,
      configurations: pick("configuration", ConfigurationSchema) as never,
      configuredTargets: pick("configuredTarget", ConfiguredTargetSchema) as never,
      actions: pick("action", ActionSchema) as never,
      fileSets: pick("fileSet", FileSetSchema) as never,
      nextPageToken: r.more && r.exportCursor ? encodeToken({ ...r.exportCursor }) : "",
    });
    return mask.apply(ExportInvocationResponseSchema, out);
  },

  async getConfiguration(req, ctx) {
    return getOne(ctx, req.name, "configuration", ConfigurationSchema);
  },

  async listConfigurations(req, ctx) {
    const p = parentIds(req.parent, "invocation");
    return listPage(ctx, { kind: "configuration", item: ConfigurationSchema, response: ListConfigurationsResponseSchema, collection: "configurations", invocationId: p.invocationId }, { ...req, pageStart: req.pageStart as PageStart });
  },

  async getTarget(req, ctx) {
    return getOne(ctx, req.name, "target", TargetSchema);
  },

  async listTargets(req, ctx) {
    const p = parentIds(req.parent, "invocation");
    return listPage(ctx, { kind: "target", item: TargetSchema, response: ListTargetsResponseSchema, collection: "targets", invocationId: p.invocationId }, { ...req, pageStart: req.pageStart as PageStart });
  },

  async getConfiguredTarget(req, ctx) {
    return getOne(ctx, req.name, "configuredTarget", ConfiguredTargetSchema);
  },

  async listConfiguredTargets(req, ctx) {
    const p = parentIds(req.parent, "target");
    const parent = p.targetId === undefined ? undefined : `invocations/${enc(p.invocationId)}/targets/${enc(p.targetId)}`;
    return listPage(
      ctx,
      { kind: "configuredTarget", item: ConfiguredTargetSchema, response: ListConfiguredTargetsResponseSchema, collection: "configuredTargets", invocationId: p.invocationId, targetId: p.targetId, parent },
      { ...req, pageStart: req.pageStart as PageStart },
    );
  },

  async getAction(req, ctx) {
    return getOne(ctx, req.name, "action", ActionSchema);
  },

  async listActions(req, ctx) {
    const p = parentIds(req.parent, "configuredTarget");
    if (p.targetId === undefined && p.configId !== undefined) {
      throw invalidArgument("a target id of '-' needs a configuration id of '-' too", "parent");
    }
    const parent =
      p.targetId === undefined
        ? undefined
        : p.configId === undefined
          ? `invocations/${enc(p.invocationId)}/targets/${enc(p.targetId)}`
          : `invocations/${enc(p.invocationId)}/targets/${enc(p.targetId)}/configuredTargets/${enc(p.configId)}`;
    return listPage(
      ctx,
      { kind: "action", item: ActionSchema, response: ListActionsResponseSchema, collection: "actions", invocationId: p.invocationId, targetId: p.targetId, configId: p.configId, parent },
      { ...req, pageStart: req.pageStart as PageStart },
    );
  },

  async batchListActions(req, ctx) {
    const mask = responseMask(ctx, BatchListActionsResponseSchema);
    const id = invocationIdOf(parentIds(req.parent, "invocation").invocationId, "parent");
    const filter = listFilter(req.filter, ActionSchema, "actions", mask);
    const limit = pageSize(req.pageSize);
    const parents = req.configuredTargets.map((n) => {
      const k = parseName(n, "configuredTarget", "configured_targets");
      if (k.invocationId.toLowerCase() !== id) throw invalidArgument(`"${n}" is not under ${req.parent}`, "configured_targets");
      return canonical(n, "configuredTarget");
    });
    // The position: which configured target (index into the request's list) and the seq after which to go on.
    const token = req.pageStart.case === "pageToken" && req.pageStart.value ? req.pageStart.value : undefined;
    const pos = token ? decodeToken(token, counts("c", "s")) : { c: 0, s: 0 };
    const index = pos.c;
    const afterSeq = pos.s;
    // An offset counts actions (before the filter, as in the List methods) across the configured targets in order.
    const skip = req.pageStart.case === "offset" ? offsetOf(req.pageStart.value) : 0;
    const r = await readInvocation(ctx, id, { op: "actionsOf", parents, index, afterSeq, skip, limit });
    return mask.apply(
      BatchListActionsResponseSchema,
      create(BatchListActionsResponseSchema, {
        actions: r.rows.map((row) => fromBinary(ActionSchema, row.data)).filter(filter),
        nextPageToken: r.next ? encodeToken({ c: r.next.index, s: r.next.afterSeq }) : "",
        notFound: (r.missing ?? []).map((i) => req.configuredTargets[i]!),
      }),
    );
  },

  async getFileSet(req, ctx) {
    return getOne(ctx, req.name, "fileSet", FileSetSchema);
  },

  async listFileSets(req, ctx) {
    const p = parentIds(req.parent, "invocation");
    return listPage(ctx, { kind: "fileSet", item: FileSetSchema, response: ListFileSetsResponseSchema, collection: "fileSets", invocationId: p.invocationId }, { ...req, pageStart: req.pageStart as PageStart });
  },

  async traverseFileSets(req, ctx) {
    const mask = responseMask(ctx, TraverseFileSetsResponseSchema);
    const limit = pageSize(req.pageSize);
    const offset = positionStart(req.pageStart as PageStart);
    let invocationId: string;
    let start: string[];
    if (/\/fileSets\//.test(req.name)) {
      const k = parseName(req.name, "fileSet", "name");
      invocationId = invocationIdOf(k.invocationId, "name");
      start = [canonical(req.name, "fileSet")];
      const r = await readInvocation(ctx, invocationId, { op: "get", names: start });
      if (!r.rows.length) throw notFound(`file set "${req.name}" not found`);
    } else {
      const parts = req.name.split("/");
      const actionId = parts.at(-1) === "-" ? undefined : parts.at(-1);
      const k = parseName(actionId === undefined ? [...parts.slice(0, -1), "x"].join("/") : req.name, "action", "name");
      invocationId = invocationIdOf(k.invocationId, "name");
      let actions: Action[];
      if (actionId === undefined) {
        // Every page of the actions (pages end at PAGE_BYTES, so one read may not hold them all).
        actions = [];
        let after: ListCursor = { t: 0, c: 0, s: 0 };
        for (;;) {
          const r = await readInvocation(ctx, invocationId, { op: "list", kind: "action", targetId: k.targetId, configId: k.configId, after, offset: 0, limit: MAX_PAGE });
          actions.push(...r.rows.map((row) => fromBinary(ActionSchema, row.data)));
          if (!r.more || !r.cursor) break;
          after = r.cursor;
        }
      } else {
        const r = await readInvocation(ctx, invocationId, { op: "get", names: [canonical(req.name, "action")] });
        if (!r.rows.length) throw notFound(`action "${req.name}" not found`);
        actions = r.rows.map((row) => fromBinary(ActionSchema, row.data));
      }
      start = actions.flatMap((a) => a.fileSets);
    }
    // The closure is recomputed per page and sliced by position: order is stable for a given state.
    const all = await traverse(ctx, invocationId, start);
    // A page ends at page_size or PAGE_BYTES (at least one), as the DO's list pages do.
    const page: FileSet[] = [];
    let bytes = 0;
    for (const { set, bytes: n } of all.slice(offset, offset + limit)) {
      bytes += n;
      if (page.length > 0 && bytes > PAGE_BYTES) break;
      page.push(set);
    }
    const out = create(TraverseFileSetsResponseSchema, {
      fileSets: page,
      nextPageToken: offset + page.length < all.length ? encodeToken({ o: offset + page.length }) : "",
    });
    return mask.apply(TraverseFileSetsResponseSchema, out);
  },
};

/** Every method authenticates its caller before it looks at the request (see caller()). */
export const resultStoreDownloadService = Object.fromEntries(
  Object.entries(methods).map(([name, method]) => [
    name,
    async (req: never, ctx: HandlerContext) => {
      await caller(ctx);
      return (method as (req: never, ctx: HandlerContext) => unknown)(req, ctx);
    },
  ]),
) as ServiceImpl<typeof ResultStoreDownload>;
