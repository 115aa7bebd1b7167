// Opaque page tokens for GetTree: the remaining BFS queue, bound to the root it came from.
import { invalidArgument } from "../errors.ts";
import { blobKey, parseHash, parseSize, type BlobDigest } from "./digest.ts";

const b64url = (s: string) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64url = (s: string) => atob(s.replace(/-/g, "+").replace(/_/g, "/"));

export function encodePageToken(queue: BlobDigest[], root: BlobDigest): string {
  return b64url(JSON.stringify({ r: blobKey(root), q: queue.map(blobKey) }));
}

export function decodePageToken(token: string, root: BlobDigest): BlobDigest[] {
  try {
    const { r, q } = JSON.parse(unb64url(token)) as { r: string; q: string[] };
    if (r !== blobKey(root) || !Array.isArray(q)) throw new Error();
    return q.map((k) => {
      const [h, s] = k.split("/");
      return { hash: parseHash(h ?? ""), size: parseSize(s ?? "") };
    });
  } catch {
    throw invalidArgument("page_token is not a token this server issued for this root", "page_token");
  }
}
