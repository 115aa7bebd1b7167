// google.devtools.resultstore.v2.ResultStoreDownload. Reads of one invocation go to its
// InvocationDO (src/resultstore/download-reads.ts over read-store.ts); searches across invocations
// go to the D1 index (src/resultstore/search-index.ts). Every method but
// GetInvocationDownloadMetadata requires a response field mask, as the API says
// (SearchConfiguredTargets: only the fields its comment lists). Paging (src/resultstore/paging.ts):
// page sizes are capped, page tokens are opaque and checked, offsets work on every method,
// BatchListActions and TraverseFileSets included. Searches resume after the last row's (start
// time, name), so newer invocations arriving meanwhile do not shift the pages; ExportInvocation
// resumes after its last row in export order; TraverseFileSets pages by position. The List
// methods' `filter` is the search syntax evaluated per resource (src/resultstore/list-filter.ts);
// the export filters take one `id.… = "…"` each (src/resultstore/export-filters.ts).
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { create, fromBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { invalidArgument, notFound } from "../errors.ts";
import { ActionSchema, type Action } from "../gen/google/devtools/resultstore/v2/action_pb.ts";
import { ConfigurationSchema } from "../gen/google/devtools/resultstore/v2/configuration_pb.ts";
import { ConfiguredTargetSchema } from "../gen/google/devtools/resultstore/v2/configured_target_pb.ts";
import { DownloadMetadataSchema, type DownloadMetadata } from "../gen/google/devtools/resultstore/v2/download_metadata_pb.ts";
import { FileSetSchema } from "../gen/google/devtools/resultstore/v2/file_set_pb.ts";
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
import { caller, getOne, listPage, readInvocation } from "../resultstore/download-reads.ts";
import { exportFilters } from "../resultstore/export-filters.ts";
import { fileSetClosure, fileSetPage } from "../resultstore/file-set-closure.ts";
import { checkInvocationId } from "../resultstore/ids.ts";
import { listFilter } from "../resultstore/list-filter.ts";
import { namedParent, parentIds } from "../resultstore/list-parents.ts";
import { canonicalName, parseName, type ResourceKind } from "../resultstore/names.ts";
import { counts, encodeToken } from "../resultstore/page-token.ts";
import { isSearchCursor, MAX_PAGE, pageSize, positionStart, startOf, type PageStart } from "../resultstore/paging.ts";
import type { ListCursor, ReadResult, ReadRow } from "../resultstore/read-store.ts";
import { optionalResponseMask, responseMask } from "../resultstore/response-mask.ts";
import { searchIndex } from "../resultstore/search-index.ts";

/** The only response fields SearchConfiguredTargets supports in its mask (the proto's list). */
const SEARCH_CONFIGURED_TARGET_FIELDS = [
  "configured_targets.name",
  "configured_targets.id",
  "configured_targets.status_attributes",
  "configured_targets.timing",
  "next_page_token",
];

const enc = encodeURIComponent;

/** One page of a search in the D1 index; keyset page tokens. */
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
  const { after, offset } = startOf(req.pageStart as PageStart, isSearchCursor);
  const r = await searchIndex(env.INDEX, principal.tenant, kind, req.query, {
    exactMatch: req.exactMatch,
    offset,
    limit,
    after: after && { key: after.k, name: after.n },
    projectId: req.projectId,
  });
  return { mask, items: r.items, next: r.more && r.last ? encodeToken({ k: r.last.key, n: r.last.name }) : "" };
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

/**
 * Where TraverseFileSets starts: a file set (which must exist), or the file sets of one action or,
 * under an action id of `-`, of every action of the configured target.
 */
async function traversalStart(ctx: HandlerContext, name: string): Promise<{ invocationId: string; start: string[] }> {
  if (/\/fileSets\//.test(name)) {
    const k = parseName(name, "fileSet", "name");
    const invocationId = checkInvocationId(k.invocationId, "name");
    const start = [canonicalName(name, "fileSet")];
    const r = await readInvocation(ctx, invocationId, { op: "get", names: start });
    if (!r.rows.length) throw notFound(`file set "${name}" not found`);
    return { invocationId, start };
  }
  const parts = name.split("/");
  const actionId = parts.at(-1) === "-" ? undefined : parts.at(-1);
  const k = parseName(actionId === undefined ? [...parts.slice(0, -1), "x"].join("/") : name, "action", "name");
  const invocationId = checkInvocationId(k.invocationId, "name");
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
    const r = await readInvocation(ctx, invocationId, { op: "get", names: [canonicalName(name, "action")] });
    if (!r.rows.length) throw notFound(`action "${name}" not found`);
    actions = r.rows.map((row) => fromBinary(ActionSchema, row.data));
  }
  return { invocationId, start: actions.flatMap((a) => a.fileSets) };
}

const methods: ServiceImpl<typeof ResultStoreDownload> = {
  async getInvocation(req, ctx) {
    return getOne(ctx, req.name, "invocation", InvocationSchema);
  },

  async getInvocationDownloadMetadata(req, ctx) {
    const m = /^(invocations\/[^/]+)\/downloadMetadata$/.exec(req.name);
    if (!m) throw invalidArgument(`"${req.name}" is not a download metadata name (invocations/{invocation}/downloadMetadata)`, "name");
    const key = parseName(m[1]!, "invocation", "name");
    const id = checkInvocationId(key.invocationId, "name");
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
    const id = checkInvocationId(key.invocationId, "name");
    const filters = exportFilters(req);
    const limit = pageSize(req.pageSize);
    // A token resumes after its row in export order (rows added meanwhile cannot shift pages); an
    // offset counts positions, the invocation being the first.
    const { after, offset } = startOf(req.pageStart as PageStart, counts("g", "t", "c", "k", "s"));
    const first = !after && offset === 0;
    // The invocation and its download metadata count once towards page_size, on the first page.
    const r = await readInvocation(ctx, id, {
      op: "export",
      after: after ?? { g: 0, t: 0, c: 0, k: 0, s: 0 },
      offset: first || after ? 0 : offset - 1,
      limit: first ? limit - 1 : limit,
      ...filters,
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
    return listPage(ctx, { kind: "configuration", item: ConfigurationSchema, response: ListConfigurationsResponseSchema, collection: "configurations", invocationId: p.invocationId }, req);
  },

  async getTarget(req, ctx) {
    return getOne(ctx, req.name, "target", TargetSchema);
  },

  async listTargets(req, ctx) {
    const p = parentIds(req.parent, "invocation");
    return listPage(ctx, { kind: "target", item: TargetSchema, response: ListTargetsResponseSchema, collection: "targets", invocationId: p.invocationId }, req);
  },

  async getConfiguredTarget(req, ctx) {
    return getOne(ctx, req.name, "configuredTarget", ConfiguredTargetSchema);
  },

  async listConfiguredTargets(req, ctx) {
    const p = parentIds(req.parent, "target");
    return listPage(
      ctx,
      { kind: "configuredTarget", item: ConfiguredTargetSchema, response: ListConfiguredTargetsResponseSchema, collection: "configuredTargets", ...p, parent: namedParent(p) },
      req,
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
    return listPage(
      ctx,
      { kind: "action", item: ActionSchema, response: ListActionsResponseSchema, collection: "actions", ...p, parent: namedParent(p) },
      req,
    );
  },

  async batchListActions(req, ctx) {
    const mask = responseMask(ctx, BatchListActionsResponseSchema);
    const id = checkInvocationId(parentIds(req.parent, "invocation").invocationId, "parent");
    const filter = listFilter(req.filter, ActionSchema, "actions", mask);
    const limit = pageSize(req.pageSize);
    const parents = req.configuredTargets.map((n) => {
      const k = parseName(n, "configuredTarget", "configured_targets");
      if (k.invocationId.toLowerCase() !== id) throw invalidArgument(`"${n}" is not under ${req.parent}`, "configured_targets");
      return canonicalName(n, "configuredTarget", "configured_targets");
    });
    // The position: which configured target (index into the request's list) and the seq after which to go on.
    // An offset counts actions (before the filter, as in the List methods) across the configured targets in order.
    const { after, offset: skip } = startOf(req.pageStart as PageStart, counts("c", "s"));
    const { c: index, s: afterSeq } = after ?? { c: 0, s: 0 };
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
    return listPage(ctx, { kind: "fileSet", item: FileSetSchema, response: ListFileSetsResponseSchema, collection: "fileSets", invocationId: p.invocationId }, req);
  },

  async traverseFileSets(req, ctx) {
    const mask = responseMask(ctx, TraverseFileSetsResponseSchema);
    const limit = pageSize(req.pageSize);
    const offset = positionStart(req.pageStart as PageStart);
    const { invocationId, start } = await traversalStart(ctx, req.name);
    const all = await fileSetClosure(async (names) => (await readInvocation(ctx, invocationId, { op: "get", names })).rows, start);
    const { page, more } = fileSetPage(all, offset, limit);
    const out = create(TraverseFileSetsResponseSchema, { fileSets: page, nextPageToken: more ? encodeToken({ o: offset + page.length }) : "" });
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
