-- Secrets this deployment generated for itself (src/execution/token-secret.ts): the key that signs
-- lease and runner tokens when TOKEN_SECRET is not set. One row per name, written once.
CREATE TABLE IF NOT EXISTS kiln_secrets (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
