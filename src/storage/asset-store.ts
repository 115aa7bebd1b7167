// Where Remote Asset entries live in R2: one small JSON object per (tenant, instance name, kind,
// URI, key qualifiers), beside the action cache's entries. An entry maps that key to a digest in
// the CAS with the times Fetch needs (when it was pushed or fetched, when it expires); the blobs
// themselves stay in the CAS, whose presence is checked on every Fetch.
import { unavailableFrom } from "../errors.ts";
import type { BlobDigest } from "./digest.ts";
import { hex } from "./sha256-state.ts";
import { upkeep } from "./upkeep.ts";

export type AssetKind = "blob" | "directory";

export interface AssetRecord {
  digest: BlobDigest;
  /** The qualifiers the asset was stored with (its key), for Fetch responses. */
  qualifiers: { name: string; value: string }[];
  /** What the content is known to hash to, base64 by SRI algorithm (checksum.sri). */
  checksums: Partial<Record<"sha256" | "sha384" | "sha512", string>>;
  /** When it was pushed, or when its retrieval from origin started (oldest_content_accepted). */
  storedAtMs: number;
  /** Push's expire_at: Fetch stops returning it after this. */
  expireAtMs?: number;
  /** Push's references_blobs / references_directories, kept present with the asset. */
  referencedBlobs: BlobDigest[];
  referencedDirectories: BlobDigest[];
}

const utf8 = new TextEncoder();

/** The R2 key of an asset. URIs and qualifier values are hashed: they are long and arbitrary. */
export async function assetKey(
  tenant: string,
  instanceName: string,
  kind: AssetKind,
  uri: string,
  keyQualifiers: readonly { name: string; value: string }[],
): Promise<string> {
  const canonical = JSON.stringify([uri, keyQualifiers.map((q) => [q.name, q.value])]);
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8.encode(canonical)));
  return `asset/${tenant}/${encodeURIComponent(instanceName)}/${kind}/${hex(hash)}`;
}

/** R2 failing an entry's read or write: UNAVAILABLE with the reason, which clients retry (not a miss). */
const assetUnavailable = (what: "read" | "stored", e: unknown) => unavailableFrom(`the Remote Asset entry could not be ${what}`, e);

export async function putAsset(bucket: R2Bucket, key: string, record: AssetRecord): Promise<void> {
  await bucket.put(key, JSON.stringify(record), { httpMetadata: { contentType: "application/json" } }).catch((e: unknown) => {
    throw assetUnavailable("stored", e);
  });
}

/**
 * Removes an expired entry (nothing else ever would), unless it changed since it was read (`etag`):
 * a Push that landed meanwhile must stay. R2 has no conditional delete, so this looks first; the
 * window left is one round trip, where it was the whole Fetch. Upkeep: a delete R2 fails is logged
 * and tried again by the next lookup; it never fails the call.
 */
export async function dropAsset(bucket: R2Bucket, key: string, etag: string): Promise<void> {
  await upkeep(
    (async () => {
      const now = await bucket.head(key);
      if (now?.etag === etag) await bucket.delete(key);
    })(),
    "asset_expired_left",
    { key },
  );
}

/** The entry under key and its etag; null if absent or not an entry (the next Push or fetch replaces it). */
export async function getAsset(bucket: R2Bucket, key: string): Promise<(AssetRecord & { etag: string }) | null> {
  let text: string;
  let etag: string;
  try {
    const obj = await bucket.get(key);
    if (!obj) return null;
    etag = obj.etag;
    text = await obj.text();
  } catch (e) {
    throw assetUnavailable("read", e);
  }
  try {
    return { ...(JSON.parse(text) as AssetRecord), etag };
  } catch {
    return null;
  }
}
