// The remote actions of one invocation (kiln.invocation.v1.RemoteActions), kept in its
// InvocationDO's SQLite beside the ResultStore resources: a row per (instance, action digest) with
// counters of the calls that carried the invocation's id in RequestMetadata.
//
// The rows live in the invocation's object, not in D1, so recording is one write to an object
// that is already per build, and deleting the invocation deletes them with everything else.

/** What a remote call did with an action. */
export type RemoteCallKind = "hit" | "miss" | "write" | "execute";

export interface RemoteCall {
  instanceName: string;
  hash: string;
  size: number;
  kind: RemoteCallKind;
  targetId: string;
  actionMnemonic: string;
  /** The Execute's operation name, for kind "execute". */
  operation?: string;
  at: number;
}

export interface RemoteActionRow {
  instanceName: string;
  hash: string;
  size: number;
  targetId: string;
  actionMnemonic: string;
  hits: number;
  misses: number;
  writes: number;
  executions: number;
  lastOperation: string;
  firstAt: number;
  lastAt: number;
  seq: number;
}

export interface RemoteActionTotals {
  actions: number;
  hits: number;
  misses: number;
  writes: number;
  executions: number;
}

export const REMOTE_ACTIONS_SCHEMA = `
CREATE TABLE IF NOT EXISTS remote_actions (
  instance_name TEXT NOT NULL, action_hash TEXT NOT NULL, action_size INTEGER NOT NULL,
  target_id TEXT NOT NULL DEFAULT '', action_mnemonic TEXT NOT NULL DEFAULT '',
  hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,
  writes INTEGER NOT NULL DEFAULT 0, executions INTEGER NOT NULL DEFAULT 0,
  last_operation TEXT NOT NULL DEFAULT '',
  first_at INTEGER NOT NULL, last_at INTEGER NOT NULL,
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  UNIQUE (instance_name, action_hash, action_size)
);
`;

/**
 * Actions one invocation keeps. A build has tens of thousands at most; past this a hostile or
 * broken client reusing one id cannot grow the object without bound: new actions are not kept,
 * calls on kept ones still count.
 */
export const MAX_REMOTE_ACTIONS = 200_000;

const COLUMN: Record<RemoteCallKind, string> = { hit: "hits", miss: "misses", write: "writes", execute: "executions" };

/** Counts one call. Returns false when the action was new and the invocation is full. */
export function recordRemoteCall(sql: SqlStorage, c: RemoteCall): boolean {
  const col = COLUMN[c.kind];
  const updated = sql.exec(
    `UPDATE remote_actions SET ${col} = ${col} + 1, last_at = MAX(last_at, ?),
       target_id = CASE WHEN ? = '' THEN target_id ELSE ? END,
       action_mnemonic = CASE WHEN ? = '' THEN action_mnemonic ELSE ? END,
       last_operation = CASE WHEN ? = '' THEN last_operation ELSE ? END
     WHERE instance_name = ? AND action_hash = ? AND action_size = ?`,
    c.at, c.targetId, c.targetId, c.actionMnemonic, c.actionMnemonic, c.operation ?? "", c.operation ?? "",
    c.instanceName, c.hash, c.size,
  ).rowsWritten;
  if (updated > 0) return true;
  // Rows are never deleted one by one, so the newest seq is the count (and costs one index probe).
  const newest = sql.exec<{ seq: number }>(`SELECT seq FROM remote_actions ORDER BY seq DESC LIMIT 1`).toArray()[0]?.seq ?? 0;
  if (newest >= MAX_REMOTE_ACTIONS) return false;
  sql.exec(
    `INSERT INTO remote_actions (instance_name, action_hash, action_size, target_id, action_mnemonic, ${col}, last_operation, first_at, last_at)
     VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)`,
    c.instanceName, c.hash, c.size, c.targetId, c.actionMnemonic, c.operation ?? "", c.at, c.at,
  );
  return true;
}

type Row = {
  instance_name: string;
  action_hash: string;
  action_size: number;
  target_id: string;
  action_mnemonic: string;
  hits: number;
  misses: number;
  writes: number;
  executions: number;
  last_operation: string;
  first_at: number;
  last_at: number;
  seq: number;
};

/** Up to `limit` rows after `afterSeq` in first-call order, whether more follow, and the totals. */
export function listRemoteActions(sql: SqlStorage, afterSeq: number, limit: number): { rows: RemoteActionRow[]; more: boolean; totals: RemoteActionTotals } {
  const raw = sql.exec<Row>(`SELECT * FROM remote_actions WHERE seq > ? ORDER BY seq LIMIT ?`, afterSeq, limit + 1).toArray();
  const rows = raw.slice(0, limit).map((r) => ({
    instanceName: r.instance_name,
    hash: r.action_hash,
    size: r.action_size,
    targetId: r.target_id,
    actionMnemonic: r.action_mnemonic,
    hits: r.hits,
    misses: r.misses,
    writes: r.writes,
    executions: r.executions,
    lastOperation: r.last_operation,
    firstAt: r.first_at,
    lastAt: r.last_at,
    seq: r.seq,
  }));
  const t = sql
    .exec<{ actions: number; hits: number | null; misses: number | null; writes: number | null; executions: number | null }>(
      `SELECT COUNT(*) AS actions, SUM(hits) AS hits, SUM(misses) AS misses, SUM(writes) AS writes, SUM(executions) AS executions FROM remote_actions`,
    )
    .one();
  return {
    rows,
    more: raw.length > limit,
    totals: { actions: t.actions, hits: t.hits ?? 0, misses: t.misses ?? 0, writes: t.writes ?? 0, executions: t.executions ?? 0 },
  };
}
