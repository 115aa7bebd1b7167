// Page tokens of ResultStoreDownload: `v1.` and the base64url of a small JSON position. Opaque to
// clients; anything this server did not issue (or issued for another method) is INVALID_ARGUMENT.
import { invalidArgument } from "../errors.ts";

export type TokenPosition = Record<string, number | string | null>;

export function encodeToken(pos: TokenPosition): string {
  const bytes = new TextEncoder().encode(JSON.stringify(pos));
  return `v1.${btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
}

const refused = () => invalidArgument("page_token is not one this server issued for this method", "page_token");

/** The position in a token; `check` says whether it has the shape this method issues. */
export function decodeToken<P extends TokenPosition>(token: string, check: (pos: TokenPosition) => pos is P): P {
  let pos: unknown;
  try {
    if (!token.startsWith("v1.")) throw refused();
    const bin = atob(token.slice(3).replace(/-/g, "+").replace(/_/g, "/"));
    pos = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    throw refused();
  }
  if (typeof pos !== "object" || pos === null || Array.isArray(pos) || !check(pos as TokenPosition)) throw refused();
  return pos as P;
}

/** A non-negative safe integer field. */
export const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** Shape checks for tokens of exactly these integer fields, e.g. counts("s") for { s: seq }. */
export const counts =
  <K extends string>(...keys: K[]) =>
  (pos: TokenPosition): pos is Record<K, number> =>
    Object.keys(pos).length === keys.length && keys.every((k) => isCount(pos[k]));
