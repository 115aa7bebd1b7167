// The cross-object listing of operations in D1, written through by each OperationDO, so
// ListOperations can filter and page without visiting every Durable Object. Its table is
// migrations/0001_operations.sql.
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

export async function indexOperation(env: Env, op: IndexedOperation): Promise<void> {
  await env.INDEX.prepare(
    `INSERT INTO operations (name, tenant, instance_name, stage, done, action_hash, action_size, created_at, updated_at, tool_invocation_id)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT(name) DO UPDATE SET stage = excluded.stage, done = excluded.done, updated_at = excluded.updated_at`,
  )
    .bind(op.name, op.tenant, op.instanceName, op.stage, op.done ? 1 : 0, op.actionDigest.hash, op.actionDigest.size, op.createdAt, op.updatedAt, op.toolInvocationId ?? "")
    .run();
}

export async function unindexOperation(env: Env, name: string): Promise<void> {
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
