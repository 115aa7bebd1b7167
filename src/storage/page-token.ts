// Opaque page tokens for GetTree: where a breadth-first walk stands, bound to the root it came
// from. A token carries the queue of directories still to visit and every directory already met
// (as the first 8 bytes of its hash: 11 base64 characters each, about 380,000 directories under a
// 4 MiB message), so a resumed walk neither re-reads finished pages nor repeats a directory that
// two parents share.
import { invalidArgument } from "../errors.ts";
import { blobKey, parseHash, parseSize, type BlobDigest } from "./digest.ts";

const b64url = (s: string) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64url = (s: string) => atob(s.replace(/-/g, "+").replace(/_/g, "/"));

/** How a directory is remembered as met: 8 bytes (16 hex digits) of its hash. */
const SEEN_HEX = 16;
export const seenKey = (d: BlobDigest) => d.hash.slice(0, SEEN_HEX);

export interface TreeWalk {
  queue: BlobDigest[];
  /** seenKey() of every directory visited or queued. */
  seen: Set<string>;
}

export function encodePageToken(walk: TreeWalk, root: BlobDigest): string {
  let seen = "";
  for (const k of walk.seen) for (let i = 0; i < SEEN_HEX; i += 2) seen += String.fromCharCode(parseInt(k.slice(i, i + 2), 16));
  return b64url(JSON.stringify({ r: blobKey(root), q: walk.queue.map(blobKey), s: b64url(seen) }));
}

export function decodePageToken(token: string, root: BlobDigest): TreeWalk {
  try {
    const { r, q, s } = JSON.parse(unb64url(token)) as { r: string; q: string[]; s: string };
    if (r !== blobKey(root) || !Array.isArray(q) || typeof s !== "string") throw new Error();
    const queue = q.map((k) => {
      const [h, size] = k.split("/");
      return { hash: parseHash(h ?? ""), size: parseSize(size ?? "") };
    });
    const raw = unb64url(s);
    if (raw.length % (SEEN_HEX / 2) !== 0) throw new Error();
    const seen = new Set<string>();
    for (let i = 0; i < raw.length; i += SEEN_HEX / 2) {
      let k = "";
      for (let j = i; j < i + SEEN_HEX / 2; j++) k += raw.charCodeAt(j).toString(16).padStart(2, "0");
      seen.add(k);
    }
    return { queue, seen };
  } catch {
    throw invalidArgument("page_token is not a token this server issued for this root", "page_token");
  }
}
