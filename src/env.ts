import type { CasIndexDO } from "../durable-objects/cas-index.ts";
import type { InvocationDO } from "../durable-objects/invocation.ts";
import type { OperationDO } from "../durable-objects/operation.ts";
import type { RunnerPoolDO } from "../durable-objects/runner-pool.ts";
import type { RunnerContainer } from "../durable-objects/runner-container.ts";

/** Bindings and variables of the Kiln worker (wrangler.toml, secrets, .dev.vars). */
export interface Env {
  CAS: R2Bucket;
  CAS_INDEX: DurableObjectNamespace<CasIndexDO>;
  OPERATION: DurableObjectNamespace<OperationDO>;
  /** Pool shards: the queue of operations and the runners connected to take them. */
  RUNNER_POOL: DurableObjectNamespace<RunnerPoolDO>;
  /** One ResultStore invocation and its children each, keyed by tenant + invocation id. */
  INVOCATION: DurableObjectNamespace<InvocationDO>;
  /** The runner containers (deployed): started by the pool when work waits; they dial the pool. */
  RUNNER?: DurableObjectNamespace<RunnerContainer>;
  /** Workers Analytics Engine dataset (optional): the /metrics counts as data points, summed across isolates. */
  ANALYTICS?: AnalyticsEngineDataset;
  /** Cross-object listings: ListOperations. */
  INDEX: D1Database;
  /** Upper bound of the summed blob sizes in one batch request; advertised in Capabilities. */
  MAX_BATCH_TOTAL_SIZE_BYTES?: string;
  /** Directories one GetTree call reads before answering with a page token (default 5000). */
  MAX_TREE_DIRECTORIES_PER_CALL?: string;
  /**
   * Blobs larger than this (default 1 GiB) are uploaded resumably (R2 multipart, SHA-256 state
   * saved per part); smaller ones in one verified put. At least the 8 MiB part size.
   */
  RESUMABLE_UPLOAD_ABOVE_BYTES?: string;
  /** API keys as JSON (see README, "API keys"). Unset or empty: the service runs open. */
  API_KEYS?: string;
  /** Runner credentials as JSON (see README, "Runners"). */
  RUNNER_KEYS?: string;
  /** Signs lease and runner tokens; derived from API_KEYS and RUNNER_KEYS when unset. */
  TOKEN_SECRET?: string;
  /** "true": without API_KEYS, accept anonymous writes and Execute even on a public address. */
  ALLOW_OPEN?: string;
  /** "false": no JSON access-log line per request (on by default). */
  ACCESS_LOG?: string;
  /** How many RunnerContainer instances the pool may start (deployed). */
  RUNNER_CONTAINERS?: string;
  /** This worker's URL as containers reach it. */
  PUBLIC_URL?: string;
  RUNNER_HEARTBEAT_SECONDS?: string;
  RUNNER_LEASE_SECONDS?: string;
  RUNNER_POOL_SHARDS?: string;
  OPERATION_RECONCILE_SECONDS?: string;
  OPERATION_RETENTION_SECONDS?: string;
  DEFAULT_ACTION_TIMEOUT_SECONDS?: string;
  MAX_ACTION_TIMEOUT_SECONDS?: string;
  /** Queued operations complete UNAVAILABLE once no runner has answered for this long. */
  NO_RUNNER_TIMEOUT_SECONDS?: string;
  /** Origins that browsers may call from: comma-separated, or "*" (then without credentials). Unset: none. */
  CORS_ORIGINS?: string;
  /** A ResultStore invocation not modified for this long is finalized (default 86400). */
  RESULTSTORE_AUTO_FINALIZE_SECONDS?: string;
}
