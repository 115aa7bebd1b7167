// The cross-invocation search index in D1: one row per invocation, target, configuration and
// configured target, with the columns SearchInvocations and SearchConfiguredTargets filter on and
// the resource itself (protobuf binary) for the answer. Each InvocationDO writes its rows through
// (src/resultstore/index-sync.ts); rows are keyed by (tenant, name), so a write is idempotent and
// a retry after a failure is harmless. The tables are migrations/0002_resultstore_search.sql.
import { fromBinary } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { ConfigurationSchema } from "../gen/google/devtools/resultstore/v2/configuration_pb.ts";
import { ConfiguredTargetSchema } from "../gen/google/devtools/resultstore/v2/configured_target_pb.ts";
import { InvocationSchema } from "../gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { TargetSchema } from "../gen/google/devtools/resultstore/v2/target_pb.ts";
import type { Property } from "../gen/google/devtools/resultstore/v2/common_pb.ts";
import { compileQuery, normalize, type SearchKind } from "./search-query.ts";

export type IndexedKind = "invocation" | "target" | "configuration" | "configuredTarget";
export interface IndexChange {
  kind: IndexedKind;
  name: string;
  /** The resource, protobuf binary; null: removed. */
  data: Uint8Array | null;
  /** For kind "invocation": DownloadMetadata.upload_status now. */
  uploadStatus?: number;
}

/** Statements per D1 batch: keeps one round trip's payload bounded on a 10,000-row write. */
const BATCH = 200;

const TABLES: Record<IndexedKind, string> = {
  invocation: "rs_invocations",
  target: "rs_targets",
  configuration: "rs_configurations",
  configuredTarget: "rs_configured_targets",
};

const ms = (t: Timestamp | undefined) => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : null);
/** Repeated strings as a JSON array of [raw, normalized] pairs: exact and loose matching both index-free. */
const strings = (xs: string[]) => JSON.stringify(xs.map((x) => [x, normalize(x)]));
const props = (ps: Property[]) => JSON.stringify(ps.map((p) => [p.key, p.value]));

/** D1's limit on one row (and on one string or BLOB in it): a larger row can never be written. */
export const D1_MAX_ROW_BYTES = 2_000_000;

type Value = string | number | null | Uint8Array;
interface Row {
  sql: string;
  values: Value[];
  /** What the row weighs against D1_MAX_ROW_BYTES: its values' sizes (UTF-8 for text). */
  bytes: number;
}

const utf8 = new TextEncoder();
function row(sql: string, values: Value[]): Row {
  let bytes = 0;
  for (const v of values) bytes += v instanceof Uint8Array ? v.byteLength : typeof v === "string" ? utf8.encode(v).byteLength : 8;
  return { sql, values, bytes };
}

function upsertRow(tenant: string, c: IndexChange & { data: Uint8Array }): Row {
  switch (c.kind) {
    case "invocation": {
      const m = fromBinary(InvocationSchema, c.data);
      return row(
        `INSERT OR REPLACE INTO rs_invocations (tenant, name, invocation_id, project_id, status, start_ms, hostname, upload_status, users, labels, props, data)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [
          tenant,
          c.name,
          m.id?.invocationId ?? "",
          m.invocationAttributes?.projectId ?? "",
          m.statusAttributes?.status ?? 0,
          ms(m.timing?.startTime),
          JSON.stringify([m.workspaceInfo?.hostname ?? "", normalize(m.workspaceInfo?.hostname ?? "")]),
          c.uploadStatus ?? 0,
          strings(m.invocationAttributes?.users ?? []),
          strings(m.invocationAttributes?.labels ?? []),
          props(m.properties),
          c.data,
        ]);
    }
    case "target": {
      const m = fromBinary(TargetSchema, c.data);
      return row(
        `INSERT OR REPLACE INTO rs_targets (tenant, name, invocation_id, target_id, type, language, test_size, tags, props)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [
          tenant,
          c.name,
          m.id?.invocationId ?? "",
          m.id?.targetId ?? "",
          m.targetAttributes?.type ?? 0,
          m.targetAttributes?.language ?? 0,
          m.testAttributes?.size ?? 0,
          strings(m.targetAttributes?.tags ?? []),
          props(m.properties),
        ]);
    }
    case "configuration": {
      const m = fromBinary(ConfigurationSchema, c.data);
      return row(
        `INSERT OR REPLACE INTO rs_configurations (tenant, name, invocation_id, config_id, cpu, props) VALUES (?, ?, ?, ?, ?, ?)`,
        [
          tenant,
          c.name,
          m.id?.invocationId ?? "",
          m.id?.configurationId ?? "",
          JSON.stringify([m.configurationAttributes?.cpu ?? "", normalize(m.configurationAttributes?.cpu ?? "")]),
          props(m.properties),
        ]);
    }
    case "configuredTarget": {
      const m = fromBinary(ConfiguredTargetSchema, c.data);
      return row(
        `INSERT OR REPLACE INTO rs_configured_targets (tenant, name, invocation_id, target_id, config_id, status, start_ms, props, data)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [
          tenant,
          c.name,
          m.id?.invocationId ?? "",
          m.id?.targetId ?? "",
          m.id?.configurationId ?? "",
          m.statusAttributes?.status ?? 0,
          ms(m.timing?.startTime),
          props(m.properties),
          c.data,
        ]);
    }
  }
}

/** A change whose row is over D1's row limit: it is never written (and any older row is removed). */
export interface UnfitChange {
  change: IndexChange;
  /** The row's size (null: D1 refused it for a reason of its own). */
  bytes: number | null;
  reason: string;
}

/**
 * Writes (upserts or deletes) the rows of these resources; idempotent, so callers may retry.
 * Returns the changes that can never be written (their row is over D1_MAX_ROW_BYTES): their names
 * leave the index instead, so a search never answers with an older version of them.
 */
export async function writeSearchIndex(db: D1Database, tenant: string, changes: IndexChange[]): Promise<UnfitChange[]> {
  const unfit: UnfitChange[] = [];
  const statements = changes.map((c) => {
    if (c.data !== null) {
      const r = upsertRow(tenant, c as IndexChange & { data: Uint8Array });
      if (r.bytes <= D1_MAX_ROW_BYTES) return db.prepare(r.sql).bind(...r.values);
      unfit.push({ change: c, bytes: r.bytes, reason: `the row is ${r.bytes} bytes, over D1's limit of ${D1_MAX_ROW_BYTES}` });
    }
    return db.prepare(`DELETE FROM ${TABLES[c.kind]} WHERE tenant = ? AND name = ?`).bind(tenant, c.name);
  });
  for (let i = 0; i < statements.length; i += BATCH) await db.batch(statements.slice(i, i + BATCH));
  return unfit;
}

/** Removes every row of one invocation (DeleteInvocation). */
export async function removeInvocationFromIndex(db: D1Database, tenant: string, invocationName: string): Promise<void> {
  const id = decodeURIComponent(invocationName.slice("invocations/".length));
  await db.batch(
    Object.values(TABLES).map((t) => db.prepare(`DELETE FROM ${t} WHERE tenant = ? AND invocation_id = ?`).bind(tenant, id)),
  );
}

/** Where a search page ends: the row's sort key (start time in ms; null: none) and name. */
export interface SearchCursor {
  key: number | null;
  name: string;
}

export interface SearchOptions {
  exactMatch: boolean;
  /** Rows to skip (the request's offset); used when there is no cursor. */
  offset: number;
  limit: number;
  /** Continue after this row (from a page token): rows added meanwhile cannot shift the pages. */
  after?: SearchCursor;
  /** The request's project_id: only invocations of that project (empty: every project). */
  projectId?: string;
}

/**
 * Runs a SearchInvocations / SearchConfiguredTargets query (the syntax of resultstore_download.proto)
 * in a stable order: newest start time first (none last), then name — for invocations exactly the
 * order of rs_invocations_by_time, so a page reads the index instead of sorting the tenant's rows.
 * Throws INVALID_ARGUMENT for a query it does not support.
 */
export async function searchIndex(
  db: D1Database,
  tenant: string,
  kind: SearchKind,
  query: string,
  opts: SearchOptions,
): Promise<{ items: Uint8Array[]; more: boolean; last?: SearchCursor }> {
  const where = compileQuery(kind, query, opts.exactMatch);
  const project = opts.projectId ? ` AND i.project_id = ?` : "";
  // The sort key and name of each kind; configured targets without a start time take their invocation's.
  const [key, name] = kind === "invocation" ? ["i.start_ms", "i.name"] : ["COALESCE(ct.start_ms, i.start_ms)", "ct.name"];
  let after = "";
  const afterParams: unknown[] = [];
  if (opts.after) {
    // Keyset continuation in "key DESC NULLS LAST, name" order.
    if (opts.after.key === null) {
      after = ` AND ${key} IS NULL AND ${name} > ?`;
      afterParams.push(opts.after.name);
    } else {
      after = ` AND (${key} < ? OR (${key} = ? AND ${name} > ?) OR ${key} IS NULL)`;
      afterParams.push(opts.after.key, opts.after.key, opts.after.name);
    }
  }
  const params: unknown[] = [tenant, ...(opts.projectId ? [opts.projectId] : []), ...where.params, ...afterParams, opts.limit + 1, opts.after ? 0 : opts.offset];
  const sql =
    kind === "invocation"
      ? `SELECT i.data, ${key} AS k, ${name} AS n FROM rs_invocations i WHERE i.tenant = ?${project} AND (${where.sql})${after}
         ORDER BY ${key} DESC, ${name} LIMIT ? OFFSET ?`
      : `SELECT ct.data, ${key} AS k, ${name} AS n FROM rs_configured_targets ct
           LEFT JOIN rs_invocations i ON i.tenant = ct.tenant AND i.invocation_id = ct.invocation_id
           LEFT JOIN rs_targets t ON t.tenant = ct.tenant AND t.invocation_id = ct.invocation_id AND t.target_id = ct.target_id
           LEFT JOIN rs_configurations c ON c.tenant = ct.tenant AND c.invocation_id = ct.invocation_id AND c.config_id = ct.config_id
         WHERE ct.tenant = ?${project} AND (${where.sql})${after}
         ORDER BY ${key} DESC, ${name} LIMIT ? OFFSET ?`;
  const rows = (await db.prepare(sql).bind(...params).all<{ data: ArrayBuffer; k: number | null; n: string }>()).results;
  const page = rows.slice(0, opts.limit);
  const lastRow = page.at(-1);
  return {
    items: page.map((r) => new Uint8Array(r.data)),
    more: rows.length > opts.limit,
    last: lastRow ? { key: lastRow.k, name: lastRow.n } : undefined,
  };
}
