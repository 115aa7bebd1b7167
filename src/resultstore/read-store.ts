// The download side's reads of one invocation's SQLite (schema: durable-objects/invocation.ts).
// Lists run in creation order (seq) and page by seq, so a page boundary never skips or repeats a
// resource even while uploads continue; ExportInvocation pages by position in its own order.
import type { ResourceKind } from "./names.ts";

/** A list of one kind under a parent; absent ids are the `-` wildcard (or not part of the kind). */
export interface ListQuery {
  op: "list";
  kind: ResourceKind;
  targetId?: string;
  configId?: string;
  /** Resume after this seq (from a page token). */
  afterSeq: number;
  /** Skip this many first (the request's offset). */
  offset: number;
  limit: number;
}

export type ReadQuery =
  | { op: "get"; names: string[] }
  | ListQuery
  | { op: "export"; offset: number; limit: number; targetId?: string; configId?: string; actionId?: string };

export interface ReadRow {
  name: string;
  kind: ResourceKind;
  seq: number;
  data: Uint8Array;
}

export interface ReadResult {
  /** False when the invocation does not exist (never created, or deleted). */
  exists: boolean;
  uploadStatus: number;
  rows: ReadRow[];
  /** More rows follow the last one returned. */
  more: boolean;
}

type Row = { name: string; kind: ResourceKind; seq: number; data: ArrayBuffer };
const toRow = (r: Row): ReadRow => ({ name: r.name, kind: r.kind, seq: r.seq, data: new Uint8Array(r.data) });

function meta(sql: SqlStorage, k: string): SqlStorageValue | undefined {
  return sql.exec<{ v: SqlStorageValue }>(`SELECT v FROM meta WHERE k = ?`, k).toArray()[0]?.v;
}

/**
 * Export order: configurations, then each target followed by its configured targets, each followed
 * by its actions; file sets last. A row's target and configured target are found by name (primary
 * key): their names are prefixes of the row's, cut at "/configuredTargets/" and "/actions/" (ids
 * in names are url-encoded, so those can only be the name's own separators). Joining on the id
 * columns instead has no index and made every page a scan per row.
 */
const EXPORT_ORDER = `
  SELECT r.name, r.kind, r.seq, r.data FROM resources r
  LEFT JOIN resources t ON t.name = CASE r.kind
    WHEN 'target' THEN r.name
    WHEN 'configuredTarget' THEN substr(r.name, 1, instr(r.name, '/configuredTargets/') - 1)
    WHEN 'action' THEN substr(r.name, 1, instr(r.name, '/configuredTargets/') - 1) END
  LEFT JOIN resources c ON c.name = CASE r.kind
    WHEN 'configuredTarget' THEN r.name
    WHEN 'action' THEN substr(r.name, 1, instr(r.name, '/actions/') - 1) END
  WHERE r.kind != 'invocation' AND (? IS NULL OR r.kind NOT IN ('target', 'configuredTarget', 'action') OR r.target_id = ?)
    AND (? IS NULL OR r.kind NOT IN ('configuredTarget', 'action') OR r.config_id = ?)
    AND (? IS NULL OR r.kind != 'action' OR r.action_id = ?)
  ORDER BY CASE r.kind WHEN 'configuration' THEN 0 WHEN 'fileSet' THEN 2 ELSE 1 END,
    COALESCE(t.seq, 0), COALESCE(c.seq, 0), CASE r.kind WHEN 'target' THEN 0 WHEN 'configuredTarget' THEN 1 ELSE 2 END, r.seq
  LIMIT ? OFFSET ?`;

export function read(sql: SqlStorage, q: ReadQuery): ReadResult {
  const exists = sql.exec(`SELECT 1 FROM resources WHERE kind = 'invocation'`).toArray().length > 0;
  const base = {
    exists,
    uploadStatus: Number(meta(sql, "upload_status") ?? 0),
  };
  if (!exists) return { ...base, rows: [], more: false };
  if (q.op === "get") {
    const rows = q.names.flatMap((n) => sql.exec<Row>(`SELECT name, kind, seq, data FROM resources WHERE name = ?`, n).toArray().map(toRow));
    return { ...base, rows, more: false };
  }
  if (q.op === "export") {
    const f = [q.targetId ?? null, q.targetId ?? null, q.configId ?? null, q.configId ?? null, q.actionId ?? null, q.actionId ?? null];
    const rows = sql.exec<Row>(EXPORT_ORDER, ...f, q.limit + 1, q.offset).toArray().map(toRow);
    return { ...base, rows: rows.slice(0, q.limit), more: rows.length > q.limit };
  }
  const rows = sql
    .exec<Row>(
      `SELECT name, kind, seq, data FROM resources WHERE kind = ? AND seq > ?
         AND (? IS NULL OR target_id = ?) AND (? IS NULL OR config_id = ?)
       ORDER BY seq LIMIT ? OFFSET ?`,
      q.kind,
      q.afterSeq,
      q.targetId ?? null,
      q.targetId ?? null,
      q.configId ?? null,
      q.configId ?? null,
      q.limit + 1,
      q.offset,
    )
    .toArray()
    .map(toRow);
  return { ...base, rows: rows.slice(0, q.limit), more: rows.length > q.limit };
}
