-- The cross-object listing of operations (ListOperations), written through by each OperationDO
-- (src/storage/operation-index.ts). IF NOT EXISTS: databases made before migrations existed
-- (the worker created this table itself) take the migration without change.
CREATE TABLE IF NOT EXISTS operations (
  name TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  instance_name TEXT NOT NULL,
  stage INTEGER NOT NULL,
  done INTEGER NOT NULL,
  action_hash TEXT NOT NULL,
  action_size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  -- RequestMetadata.tool_invocation_id of the Execute call ('' if none).
  tool_invocation_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS operations_list ON operations (tenant, created_at DESC, name);
CREATE INDEX IF NOT EXISTS operations_invocation ON operations (tenant, tool_invocation_id);
