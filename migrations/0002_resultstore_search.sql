-- The ResultStore search index (src/resultstore/search-index.ts): one row per invocation, target,
-- configuration and configured target, written through by each InvocationDO.
CREATE TABLE IF NOT EXISTS rs_invocations (
  tenant TEXT NOT NULL, name TEXT NOT NULL, invocation_id TEXT NOT NULL, project_id TEXT NOT NULL,
  status INTEGER NOT NULL, start_ms INTEGER, hostname TEXT NOT NULL, upload_status INTEGER NOT NULL,
  users TEXT NOT NULL, labels TEXT NOT NULL, props TEXT NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (tenant, name)
);
CREATE INDEX IF NOT EXISTS rs_invocations_by_time ON rs_invocations (tenant, start_ms DESC, name);
-- Configured-target searches join their invocation by id; removals go by invocation id.
CREATE INDEX IF NOT EXISTS rs_invocations_by_id ON rs_invocations (tenant, invocation_id);

CREATE TABLE IF NOT EXISTS rs_targets (
  tenant TEXT NOT NULL, name TEXT NOT NULL, invocation_id TEXT NOT NULL, target_id TEXT NOT NULL,
  type INTEGER NOT NULL, language INTEGER NOT NULL, test_size INTEGER NOT NULL, tags TEXT NOT NULL, props TEXT NOT NULL,
  PRIMARY KEY (tenant, name)
);
CREATE INDEX IF NOT EXISTS rs_targets_by_id ON rs_targets (tenant, invocation_id, target_id);

CREATE TABLE IF NOT EXISTS rs_configurations (
  tenant TEXT NOT NULL, name TEXT NOT NULL, invocation_id TEXT NOT NULL, config_id TEXT NOT NULL,
  cpu TEXT NOT NULL, props TEXT NOT NULL,
  PRIMARY KEY (tenant, name)
);
CREATE INDEX IF NOT EXISTS rs_configurations_by_id ON rs_configurations (tenant, invocation_id, config_id);

CREATE TABLE IF NOT EXISTS rs_configured_targets (
  tenant TEXT NOT NULL, name TEXT NOT NULL, invocation_id TEXT NOT NULL, target_id TEXT NOT NULL, config_id TEXT NOT NULL,
  status INTEGER NOT NULL, start_ms INTEGER, props TEXT NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (tenant, name)
);
CREATE INDEX IF NOT EXISTS rs_configured_targets_by_target ON rs_configured_targets (tenant, target_id);
CREATE INDEX IF NOT EXISTS rs_configured_targets_by_invocation ON rs_configured_targets (tenant, invocation_id);
