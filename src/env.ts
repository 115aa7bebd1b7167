import type { CasIndexDO } from "../durable-objects/cas-index.ts";

/** Bindings and variables of the Kiln worker (wrangler.toml, secrets, .dev.vars). */
export interface Env {
  CAS: R2Bucket;
  CAS_INDEX: DurableObjectNamespace<CasIndexDO>;
  /** Upper bound of the summed blob sizes in one batch request; advertised in Capabilities. */
  MAX_BATCH_TOTAL_SIZE_BYTES?: string;
  /** API keys as JSON (see README, "API keys"). Unset or empty: the service runs open. */
  API_KEYS?: string;
}
