// InvocationDO: one ResultStore invocation (per tenant) and all its children — targets,
// configured targets, actions, configurations, file sets — in this object's SQLite. Every upload
// rule that needs the invocation's state (request ids, the authorization token, resume tokens,
// finalization, auto-finalize) is decided here, inside one single-threaded object, so two uploads
// racing on one invocation cannot both win.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env.ts";

/** The schema helper D's read side relies on (see rs-plan.md); extra tables are ours. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS resources (
  name TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  target_id TEXT NOT NULL DEFAULT '', config_id TEXT NOT NULL DEFAULT '',
  action_id TEXT NOT NULL DEFAULT '', file_set_id TEXT NOT NULL DEFAULT '',
  seq INTEGER NOT NULL,
  finalized INTEGER NOT NULL DEFAULT 0,
  data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_kind ON resources (kind, seq);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v);
`;

export class InvocationDO extends DurableObject<Env> {
  protected readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(SCHEMA);
  }
}
