// The R2 multipart uploads a code path starts, recorded so a test can check that none is left
// open: R2's binding lists objects, not uploads, and an upload never completed nor aborted is
// invisible until R2's lifecycle rule removes it.
import { env } from "cloudflare:test";
import type { Env } from "../../src/env.ts";
import { aroundBucket } from "./fault-injection.ts";

export interface StartedUpload {
  key: string;
  uploadId: string;
}

/** `base` whose bucket records every multipart upload it starts in `uploads`. */
export function watchUploads(base: Env = env): { env: Env; uploads: StartedUpload[] } {
  const uploads: StartedUpload[] = [];
  const proxy = aroundBucket(base.CAS, (op, _key, call) => {
    if (op !== "createMultipartUpload") return call();
    return (call() as Promise<R2MultipartUpload>).then((u) => {
      uploads.push({ key: u.key, uploadId: u.uploadId });
      return u;
    });
  });
  return { env: { ...base, CAS: proxy } as unknown as Env, uploads };
}

/**
 * Whether the upload still takes parts (neither completed nor aborted). Asking sends it a
 * one-byte part; an open one is then aborted, so asking leaves nothing behind either.
 */
export async function isOpen(u: StartedUpload): Promise<boolean> {
  const upload = env.CAS.resumeMultipartUpload(u.key, u.uploadId);
  try {
    await upload.uploadPart(1, new Uint8Array(1));
  } catch (e) {
    if (/does not exist|NoSuchUpload|10024/i.test(String(e))) return false;
    throw e;
  }
  await upload.abort();
  return true;
}
