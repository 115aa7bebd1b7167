import type { CasIndexDO } from "../durable-objects/cas-index.ts";
import type { InvocationDO } from "../durable-objects/invocation.ts";
import type { OperationDO } from "../durable-objects/operation.ts";
import type { SchedulerDO } from "../durable-objects/scheduler.ts";

/** Bindings and variables of the Kiln worker (wrangler.toml, secrets, .dev.vars). */
export interface Env {
  CAS: R2Bucket;
  CAS_INDEX: DurableObjectNamespace<CasIndexDO>;
  OPERATION: DurableObjectNamespace<OperationDO>;
  SCHEDULER: DurableObjectNamespace<SchedulerDO>;
  /** One ResultStore invocation and its children each, keyed by tenant + invocation id. */
  INVOCATION: DurableObjectNamespace<InvocationDO>;
  /** The runner containers (deployed); absent or unused when RUNNER_URLS is set. */
  RUNNER?: DurableObjectNamespace;
  /** Cross-object listings: ListOperations. */
  INDEX: D1Database;
  /** Upper bound of the summed blob sizes in one batch request; advertised in Capabilities. */
  MAX_BATCH_TOTAL_SIZE_BYTES?: string;
  /** Directories one GetTree call reads before answering with a page token (default 5000). */
  MAX_TREE_DIRECTORIES_PER_CALL?: string;
  /** API keys as JSON (see README, "API keys"). Unset or empty: the service runs open. */
  API_KEYS?: string;
  /** "true": without API_KEYS, accept anonymous writes and Execute even on a public address. */
  ALLOW_OPEN?: string;
  /** "false": no JSON access-log line per request (on by default). */
  ACCESS_LOG?: string;
  /** Comma-separated runner base URLs (local dev, self-hosted runners). Takes precedence over containers. */
  RUNNER_URLS?: string;
  /** How many RunnerContainer instances to spread actions over (deployed). */
  RUNNER_CONTAINERS?: string;
  /** This worker's URL as runners reach it (the CAS over HTTP). */
  PUBLIC_URL?: string;
  OPERATION_RETENTION_SECONDS?: string;
  DEFAULT_ACTION_TIMEOUT_SECONDS?: string;
  MAX_ACTION_TIMEOUT_SECONDS?: string;
  /** Queued operations complete UNAVAILABLE once no runner has answered for this long. */
  NO_RUNNER_TIMEOUT_SECONDS?: string;
  /** A ResultStore invocation not modified for this long is finalized (default 86400). */
  RESULTSTORE_AUTO_FINALIZE_SECONDS?: string;
}
