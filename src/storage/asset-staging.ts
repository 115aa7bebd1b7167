// Staging objects for Remote Asset downloads whose SHA-256 is not known up front: the download is
// put under a fresh key of its tenant's staging prefix, hashed from there, copied under its digest
// (R2 has no rename) and then dropped. Dropping is upkeep: a staging object left behind (the
// worker stopped between put and delete, or the delete failed) costs only space, and each staged
// fetch sweeps a few of its tenant's that are far older than any fetch lasts.
import { Code, ConnectError } from "@connectrpc/connect";
import { unavailableFrom } from "../errors.ts";
import type { BlobStore } from "./blob-store.ts";
import { upkeep, upkeepFailed } from "./upkeep.ts";

/** R2 custom metadata: when a staging object was written (ms since the epoch). */
const STAGED_AT = "staged-at";
/** Far past the longest fetch (10 minutes): a staging object this old was left by a fetch that died. */
const ABANDONED_AFTER_MS = 3600_000;
/** Staging objects one fetch looks at for sweeping. */
const SWEEP_BATCH = 20;

/** Where a tenant's staging objects live. */
export const stagingPrefix = (store: BlobStore) => `asset-staging/${store.tenant}/`;

/** A fresh staging key of the store's tenant. */
export const newStagingKey = (store: BlobStore) => `${stagingPrefix(store)}${crypto.randomUUID()}`;

/** Stores a download under `key`, stamped with the time (see sweeping); UNAVAILABLE if R2 fails it. */
export async function putStaged(store: BlobStore, key: string, body: ReadableStream<Uint8Array> | Uint8Array): Promise<void> {
  await store.env.CAS.put(key, body, { customMetadata: { [STAGED_AT]: String(Date.now()) } }).catch((e: unknown) => {
    throw unavailableFrom("the download could not be staged in R2", e, "nothing was stored; retry");
  });
}

/**
 * Starts a multipart upload under `key`, stamped like putStaged's objects (a completed one is swept
 * the same way; one never completed is aborted by its fetch, or else by R2's lifecycle rule).
 */
export const startStagedUpload = (store: BlobStore, key: string): Promise<R2MultipartUpload> =>
  store.env.CAS.createMultipartUpload(key, { customMetadata: { [STAGED_AT]: String(Date.now()) } });

/** The staging object to read (again); UNAVAILABLE if R2 fails or it is gone, `before` saying what it was gone for. */
export async function getStaged(store: BlobStore, key: string, before: string): Promise<R2ObjectBody> {
  const obj = await store.env.CAS.get(key).catch((e: unknown) => {
    throw unavailableFrom(`the staged download could not be read from R2 to be ${before}`, e, "nothing was stored; retry");
  });
  if (!obj) throw new ConnectError(`the staged download vanished before it was ${before}`, Code.Unavailable);
  return obj;
}

/** Deletes the staging object, then sweeps abandoned ones of the tenant. Never throws: a failure is logged. */
export async function dropStaged(store: BlobStore, key: string, now = Date.now()): Promise<void> {
  await upkeep(store.env.CAS.delete(key), "asset_staging_left", { key });
  try {
    const page = await store.env.CAS.list({ prefix: stagingPrefix(store), limit: SWEEP_BATCH, include: ["customMetadata"] });
    const stagedAt = (o: R2Object) => Number(o.customMetadata?.[STAGED_AT]) || o.uploaded.getTime();
    const old = page.objects.filter((o) => stagedAt(o) < now - ABANDONED_AFTER_MS).map((o) => o.key);
    if (old.length) await store.env.CAS.delete(old);
  } catch (e) {
    upkeepFailed("asset_staging_sweep_failed", { tenant: store.tenant }, e);
  }
}
