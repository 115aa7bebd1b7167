// Every test file starts from the D1 schema a deployment has: migrations/, applied as
// `wrangler d1 migrations apply` would (already-applied ones are skipped).
import { applyD1Migrations, env } from "cloudflare:test";

await applyD1Migrations(env.INDEX, env.TEST_MIGRATIONS);
