// The download side's reads of one invocation's SQLite (schema: durable-objects/invocation.ts).
// Lists run in creation order (seq); with a `-` wildcard, grouped by parent in the parents' order
// (configured targets by target, as ListTargets lists them; actions by target, then configured
// target), as the API asks. Lists page by a cursor of those seqs, so a page boundary never repeats
// a resource even while uploads continue; ExportInvocation pages by position in its own order.
import type { ResourceKind } from "./names.ts";

/** A list of one kind under a parent; absent ids are the `-` wildcard (or not part of the kind). */
export interface ListQuery {
  op: "list";
  kind: ResourceKind;
  targetId?: string;
  configId?: string;
  /** Resume after this position (from a page token). */
  after: ListCursor;
  /** Skip this many first (the request's offset). */
  offset: number;
  limit: number;
}

/**
 * A position in a list: the seq of the last row, and under wildcards also the seqs of its target
 * (t) and configured target (c), which order the groups. Zero: before the first.
 */
export interface ListCursor {
  t: number;
  c: number;
  s: number;
}

/**
 * The actions of several configured targets (BatchListActions), in the order named, in one call.
 * Starts at parents[index] after `afterSeq`, skipping `skip` actions first (the request's offset).
 */
export interface ActionsOfQuery {
  op: "actionsOf";
  parents: string[];
  index: number;
  afterSeq: number;
  skip: number;
  limit: number;
}

export type ReadQuery =
  | { op: "get"; names: string[] }
  | ListQuery
  | ActionsOfQuery
  | ExportQuery;

/**
 * A position in export order: group (configurations 0, targets and their children 1, file sets
 * 2), the seqs of the row's target and configured target, its rank among them (target 0,
 * configured target 1, action 2) and its own seq. All zero: before the first row.
 */
export interface ExportCursor {
  g: number;
  t: number;
  c: number;
  k: number;
  s: number;
}

/** A page of ExportInvocation after `after` (a token) or `offset` rows; filters as the request's. */
export interface ExportQuery {
  op: "export";
  after: ExportCursor;
  offset: number;
  limit: number;
  targetId?: string;
  configId?: string;
  actionId?: string;
}

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
  /** When the invocation was created, finalized and became immutable (ms since the epoch), as far as it has. */
  statusTimes: { create?: number; finalize?: number; immutable?: number };
  rows: ReadRow[];
  /** More rows follow the last one returned. */
  more: boolean;
  /** actionsOf: where the next page starts (absent: done), and the parents that do not exist. */
  next?: { index: number; afterSeq: number };
  missing?: number[];
  /** list: the position after the last row returned. */
  cursor?: ListCursor;
  /** export: the position after the last row returned. */
  exportCursor?: ExportCursor;
}

type Row = { name: string; kind: ResourceKind; seq: number; data: ArrayBuffer };
const toRow = (r: Row): ReadRow => ({ name: r.name, kind: r.kind, seq: r.seq, data: new Uint8Array(r.data) });

/**
 * Resource bytes per page. A resource may be up to ~2 MB, so a page of 1,000 could be 2 GB: over
 * the 32 MiB limit of a Durable Object RPC, the DO's memory, and the 4 MiB a gRPC client takes by
 * default. A page ends at whichever comes first, the page size or this (always at least one row);
 * 2 MiB leaves room for ExportInvocation's first page, which adds the invocation.
 */
export const PAGE_BYTES = 2 * 1024 * 1024;

/**
 * The first rows of a SQL cursor, at most `limit` and PAGE_BYTES (`budget`): read one at a time,
 * so rows past the page are never loaded. `more`: a row was left out. `keepOne`: take the first
 * row whatever its size (a page must make progress).
 */
function page<T extends { data: ArrayBuffer }>(rows: Iterable<T>, limit: number, budget = PAGE_BYTES, keepOne = true): { rows: T[]; more: boolean } {
  const out: T[] = [];
  let bytes = 0;
  for (const r of rows) {
    if (out.length >= limit) return { rows: out, more: true };
    bytes += r.data.byteLength;
    if (bytes > budget && (out.length > 0 || !keepOne)) return { rows: out, more: true };
    out.push(r);
  }
  return { rows: out, more: false };
}

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
  SELECT name, kind, seq, data, g, t, c, k FROM (
  SELECT r.name, r.kind, r.seq, r.data, CASE r.kind WHEN 'configuration' THEN 0 WHEN 'fileSet' THEN 2 ELSE 1 END AS g,
    COALESCE(t.seq, 0) AS t, COALESCE(c.seq, 0) AS c, CASE r.kind WHEN 'target' THEN 0 WHEN 'configuredTarget' THEN 1 ELSE 2 END AS k
  FROM resources r
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
  ) WHERE (g, t, c, k, seq) > (?, ?, ?, ?, ?)
  ORDER BY g, t, c, k, seq LIMIT ? OFFSET ?`;

const enc = encodeURIComponent;

/**
 * The name range of a list under one target or configured target: children's names extend the
 * parent's, so a primary-key range finds them without scanning every row of the kind. The upper
 * bound replaces the trailing "/" with "0", the next character.
 */
function childRange(invocationName: string, q: ListQuery): [string, string] | null {
  if (q.targetId === undefined) return null;
  const target = `${invocationName}/targets/${enc(q.targetId)}/configuredTargets/`;
  const prefix = q.configId === undefined ? target : `${target}${enc(q.configId)}/actions/`;
  return [prefix, `${prefix.slice(0, -1)}0`];
}

/** Actions of one configured target after a seq, in seq order (`columns`: seq alone when skipping). */
const actionsUnder = <T>(sql: SqlStorage, columns: string, ct: string, afterSeq: number, limit: number) =>
  sql.exec<T & Record<string, SqlStorageValue>>(
    `SELECT ${columns} FROM resources WHERE name >= ? AND name < ? AND +kind = 'action' AND +seq > ? ORDER BY seq LIMIT ?`,
    `${ct}/actions/`,
    `${ct}/actions0`,
    afterSeq,
    limit,
  );

function actionsOf(sql: SqlStorage, q: ActionsOfQuery): Pick<ReadResult, "rows" | "next" | "missing"> {
  const rows: ReadRow[] = [];
  const missing: number[] = [];
  let bytes = 0;
  let skip = q.skip;
  let after = q.afterSeq;
  for (let i = q.index; i < q.parents.length; i++, after = 0) {
    const ct = q.parents[i]!;
    if (sql.exec(`SELECT 1 FROM resources WHERE name = ? AND kind = 'configuredTarget'`, ct).toArray().length === 0) {
      missing.push(i);
      continue;
    }
    if (skip > 0) {
      const skipped = actionsUnder<{ seq: number }>(sql, "seq", ct, after, skip).toArray();
      skip -= skipped.length;
      if (skip > 0) continue;
      after = skipped.at(-1)!.seq;
    }
    const want = q.limit - rows.length;
    // One byte budget for the whole page, across configured targets.
    const got = page(actionsUnder<Row>(sql, "name, kind, seq, data", ct, after, want + 1), want, PAGE_BYTES - bytes, rows.length === 0);
    rows.push(...got.rows.map(toRow));
    bytes += got.rows.reduce((n, r) => n + r.data.byteLength, 0);
    if (got.more) return { rows, missing, next: { index: i, afterSeq: got.rows.at(-1)?.seq ?? after } };
    if (rows.length >= q.limit && i + 1 < q.parents.length) return { rows, missing, next: { index: i + 1, afterSeq: 0 } };
  }
  return { rows, missing };
}

const msMeta = (sql: SqlStorage, key: string): number | undefined => {
  const v = meta(sql, key);
  return v === undefined || v === null ? undefined : Number(v);
};

export function read(sql: SqlStorage, q: ReadQuery): ReadResult {
  const invocation = sql.exec<{ name: string }>(`SELECT name FROM resources WHERE kind = 'invocation'`).toArray()[0];
  const base = {
    exists: invocation !== undefined,
    uploadStatus: Number(meta(sql, "upload_status") ?? 0),
    statusTimes: { create: msMeta(sql, "create_time"), finalize: msMeta(sql, "finalize_time"), immutable: msMeta(sql, "immutable_time") },
  };
  if (!invocation) return { ...base, rows: [], more: false };
  if (q.op === "get") {
    const rows = q.names.flatMap((n) => sql.exec<Row>(`SELECT name, kind, seq, data FROM resources WHERE name = ?`, n).toArray().map(toRow));
    return { ...base, rows, more: false };
  }
  if (q.op === "export") {
    const f = [q.targetId ?? null, q.targetId ?? null, q.configId ?? null, q.configId ?? null, q.actionId ?? null, q.actionId ?? null];
    const a = q.after;
    const { rows, more } = page(sql.exec<Row & Omit<ExportCursor, "s">>(EXPORT_ORDER, ...f, a.g, a.t, a.c, a.k, a.s, q.limit + 1, q.offset), q.limit);
    const last = rows.at(-1);
    return { ...base, rows: rows.map(toRow), more, exportCursor: last ? { g: last.g, t: last.t, c: last.c, k: last.k, s: last.seq } : a };
  }
  if (q.op === "actionsOf") return { ...base, more: false, ...actionsOf(sql, q) };
  const { rows, more } = list(sql, invocation.name, q);
  const last = rows.at(-1);
  return { ...base, rows: rows.map(toRow), more, cursor: last && { t: last.t ?? 0, c: last.c ?? 0, s: last.seq } };
}

/** Children of a parent row `p` by name range (see childRange): `x` joined under `p`. */
const under = (x: string, p: string, segment: string, kind: string) =>
  `JOIN resources ${x} ON ${x}.name >= ${p}.name || '/${segment}/' AND ${x}.name < ${p}.name || '/${segment}0' AND +${x}.kind = '${kind}'`;

type ListRow = Row & { t?: number; c?: number };

/** One page of a list (the SQL asks one row more, to tell whether more follow). */
function list(sql: SqlStorage, invocationName: string, q: ListQuery): { rows: ListRow[]; more: boolean } {
  const { t, c, s } = q.after;
  const tail = [q.limit + 1, q.offset];
  const exec = (query: string, ...args: unknown[]) => page(sql.exec<ListRow>(query, ...(args as SqlStorageValue[]), ...tail), q.limit);
  if (q.kind === "configuredTarget" && q.targetId === undefined) {
    return exec(
      `SELECT r.name, r.kind, r.seq, r.data, t.seq AS t FROM resources t ${under("r", "t", "configuredTargets", "configuredTarget")}
       WHERE t.kind = 'target' AND t.seq >= ? AND (t.seq > ? OR r.seq > ?) ORDER BY t.seq, r.seq LIMIT ? OFFSET ?`,
      t,
      t,
      s,
    );
  }
  if (q.kind === "action" && q.targetId === undefined) {
    return exec(
      `SELECT r.name, r.kind, r.seq, r.data, t.seq AS t, c.seq AS c FROM resources t
         ${under("c", "t", "configuredTargets", "configuredTarget")} ${under("r", "c", "actions", "action")}
       WHERE t.kind = 'target' AND t.seq >= ? AND (t.seq > ? OR c.seq > ? OR (c.seq = ? AND r.seq > ?))
       ORDER BY t.seq, c.seq, r.seq LIMIT ? OFFSET ?`,
      t,
      t,
      c,
      c,
      s,
    );
  }
  if (q.kind === "action" && q.configId === undefined) {
    const [lo, hi] = childRange(invocationName, q)!;
    return exec(
      `SELECT r.name, r.kind, r.seq, r.data, c.seq AS c FROM resources c ${under("r", "c", "actions", "action")}
       WHERE c.name >= ? AND c.name < ? AND +c.kind = 'configuredTarget' AND (c.seq > ? OR (c.seq = ? AND r.seq > ?))
       ORDER BY c.seq, r.seq LIMIT ? OFFSET ?`,
      lo,
      hi,
      c,
      c,
      s,
    );
  }
  const range = childRange(invocationName, q);
  return range
    ? exec(`SELECT name, kind, seq, data FROM resources WHERE name >= ? AND name < ? AND +kind = ? AND +seq > ? ORDER BY seq LIMIT ? OFFSET ?`, range[0], range[1], q.kind, s)
    : exec(`SELECT name, kind, seq, data FROM resources WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ? OFFSET ?`, q.kind, s);
}
