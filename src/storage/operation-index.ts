// The cross-object listing of operations in D1, written through by each OperationDO, so
// ListOperations can filter and page without visiting every Durable Object.
import type { Env } from "../env.ts";

export interface IndexedOperation {
  name: string;
  tenant: string;
  instanceName: string;
  stage: number;
  done: boolean;
  actionDigest: { hash: string; size: number };
  createdAt: number;
  updatedAt: number;
  /** RequestMetadata.tool_invocation_id of the Execute call ("" if none). */
  toolInvocationId?: string;
}

let ready: Promise<unknown> | undefined;

/** Creates the table on first use in an isolate (cheap: IF NOT EXISTS). */
function ensureSchema(db: D1Database) {
  ready ??= db
    .batch([
      db.prepare(`CREATE TABLE IF NOT EXISTS operations (
        name TEXT PRIMARY KEY, tenant TEXT NOT NULL, instance_name TEXT NOT NULL, stage INTEGER NOT NULL,
        done INTEGER NOT NULL, action_hash TEXT NOT NULL, action_size INTEGER NOT NULL,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)`),
      db.prepare(`CREATE INDEX IF NOT EXISTS operations_list ON operations (tenant, created_at DESC, name)`),
    ])
    // Added after the first release: tables made before it gain the column here.
    .then(() => db.prepare(`ALTER TABLE operations ADD COLUMN tool_invocation_id TEXT NOT NULL DEFAULT ''`).run().catch(() => {}))
    .then(() => db.prepare(`CREATE INDEX IF NOT EXISTS operations_invocation ON operations (tenant, tool_invocation_id)`).run())
    .catch((e) => {
      ready = undefined;
      throw e;
    });
  return ready;
}

export async function indexOperation(env: Env, op: IndexedOperation): Promise<void> {
  await ensureSchema(env.INDEX);
  await env.INDEX.prepare(
    `INSERT INTO operations (name, tenant, instance_name, stage, done, action_hash, action_size, created_at, updated_at, tool_invocation_id)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT(name) DO UPDATE SET stage = excluded.stage, done = excluded.done, updated_at = excluded.updated_at`,
  )
    .bind(op.name, op.tenant, op.instanceName, op.stage, op.done ? 1 : 0, op.actionDigest.hash, op.actionDigest.size, op.createdAt, op.updatedAt, op.toolInvocationId ?? "")
    .run();
}

export async function unindexOperation(env: Env, name: string): Promise<void> {
  await ensureSchema(env.INDEX);
  await env.INDEX.prepare(`DELETE FROM operations WHERE name = ?`).bind(name).run();
}

export interface ListFilter {
  tenant: string;
  done?: boolean;
  stage?: number;
  instanceName?: string;
  toolInvocationId?: string;
}

export interface ListCursor {
  createdAt: number;
  name: string;
}

/** Newest first; `after` continues a previous page. */
export async function listOperations(env: Env, f: ListFilter, pageSize: number, after?: ListCursor): Promise<IndexedOperation[]> {
  await ensureSchema(env.INDEX);
  const where = ["tenant = ?"];
  const args: (string | number)[] = [f.tenant];
  if (f.done !== undefined) (where.push("done = ?"), args.push(f.done ? 1 : 0));
  if (f.stage !== undefined) (where.push("stage = ?"), args.push(f.stage));
  if (f.instanceName !== undefined) (where.push("instance_name = ?"), args.push(f.instanceName));
  if (f.toolInvocationId !== undefined) (where.push("tool_invocation_id = ?"), args.push(f.toolInvocationId));
  if (after) (where.push("(created_at < ? OR (created_at = ? AND name > ?))"), args.push(after.createdAt, after.createdAt, after.name));
  const rows = await env.INDEX.prepare(
    `SELECT * FROM operations WHERE ${where.join(" AND ")} ORDER BY created_at DESC, name LIMIT ?`,
  )
    .bind(...args, pageSize)
    .all<{ name: string; tenant: string; instance_name: string; stage: number; done: number; action_hash: string; action_size: number; created_at: number; updated_at: number; tool_invocation_id: string }>();
  return rows.results.map((r) => ({
    name: r.name,
    tenant: r.tenant,
    instanceName: r.instance_name,
    stage: r.stage,
    done: r.done === 1,
    actionDigest: { hash: r.action_hash, size: r.action_size },
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    toolInvocationId: r.tool_invocation_id,
  }));
}
