/**
 * The Kiln worker's environment. Bindings and the [vars] of wrangler.toml are generated from it by
 * `npm run types` (worker-configuration.d.ts, checked by `npm run typecheck`); what follows are
 * the settings without a default there: secrets (`wrangler secret put`) and optional [vars]. See
 * the README's configuration table.
 */
export interface Env extends KilnBindings {
  /** Workers Analytics Engine dataset (optional): the /metrics counts as data points, summed across isolates. */
  ANALYTICS?: AnalyticsEngineDataset;
  /** Subrequests one GetTree call spends reading directories before answering with a page token (default 5000). */
  MAX_TREE_READS_PER_CALL?: string;
  /** Subrequests one SpliceBlob may make (services/limits.ts maxSpliceSubrequests). */
  MAX_SPLICE_SUBREQUESTS?: string;
  /** Subrequests one SplitBlob may make (services/limits.ts maxSplitSubrequests). */
  MAX_SPLIT_SUBREQUESTS?: string;
  /** The older name of MAX_TREE_READS_PER_CALL. */
  MAX_TREE_DIRECTORIES_PER_CALL?: string;
  /** The edge's request-body cap in bytes (default 100000000); 0: none. Sets max_cas_blob_size_bytes. */
  MAX_REQUEST_BODY_BYTES?: string;
  /** FastCDC average chunk size for SplitBlob (1 KiB..1 MiB, default 524288). */
  CHUNK_AVG_SIZE_BYTES?: string;
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
  /** This worker's URL as containers reach it; unset: the origin requests arrive at. */
  PUBLIC_URL?: string;
  RUNNER_HEARTBEAT_SECONDS?: string;
  RUNNER_LEASE_SECONDS?: string;
  RUNNER_POOL_SHARDS?: string;
  OPERATION_RECONCILE_SECONDS?: string;
  DEFAULT_ACTION_TIMEOUT_SECONDS?: string;
  MAX_ACTION_TIMEOUT_SECONDS?: string;
  /** Queued operations complete UNAVAILABLE once no runner has answered for this long. */
  NO_RUNNER_TIMEOUT_SECONDS?: string;
  /** CAS index objects per tenant (default 16); see README "Sizing the CAS index" before changing it. */
  CAS_INDEX_SHARDS?: string;
  /** A blob's last access is rewritten at most this often (default 3600). */
  CAS_TOUCH_INTERVAL_SECONDS?: string;
  /** In-isolate cache of "present" answers: TTL (default 300; 0: off) and size (default 50000). */
  CAS_EXISTENCE_CACHE_SECONDS?: string;
  CAS_EXISTENCE_CACHE_ENTRIES?: string;
  /** Eviction never removes a blob used this recently (hours, default 3); bounds the two above. */
  CAS_MIN_LIFETIME_HOURS?: string;
  /** Origins that browsers may call from: comma-separated, or "*" (then without credentials). Unset: none. */
  CORS_ORIGINS?: string;
  /** Per tenant: CAS bytes kept; least recently used blobs beyond it are evicted. Unset: no budget. */
  CAS_MAX_BYTES?: string;
  /** Per tenant: CAS blobs not used for this many days are evicted. Unset: kept while within budget. */
  CAS_MAX_IDLE_DAYS?: string;
  /** Action-cache entries not used for this many days are deleted. Unset: kept. */
  AC_MAX_IDLE_DAYS?: string;
  /** Hosts (or host:port) Remote Asset FetchBlob may download from, comma-separated. Unset: none. */
  ASSET_FETCH_ALLOW?: string;
  /** The most bytes one FetchBlob downloads (default and ceiling: R2's largest put, 5 GiB less 5 MiB). */
  ASSET_FETCH_MAX_BYTES?: string;
}
