// Where a page of ResultStoreDownload starts and how long it is. Page sizes are capped at MAX_PAGE
// (0 means that cap). A request starts at the beginning, after a page token this server issued, or
// at an offset; tokens are opaque and checked (page-token.ts), offsets bounded.
import { invalidArgument } from "../errors.ts";
import { MAX_LIST_OFFSET } from "../services/limits.ts";
import type { ListCursor } from "./read-store.ts";
import { counts, decodeToken, type TokenPosition } from "./page-token.ts";

export const MAX_PAGE = 1000;

/** The request's `page_start` oneof (page_token or offset), as every paged request has it. */
export type PageStart = { case: "pageToken"; value: string } | { case: "offset"; value: bigint } | { case: undefined; value?: undefined };

/** The rows a page holds at most. */
export function pageSize(n: number): number {
  if (n < 0) throw invalidArgument("page_size must not be negative", "page_size");
  return n === 0 ? MAX_PAGE : Math.min(n, MAX_PAGE);
}

export function offsetOf(v: bigint): number {
  if (v < 0n || v > BigInt(MAX_LIST_OFFSET)) throw invalidArgument(`offset must be between 0 and ${MAX_LIST_OFFSET} (MAX_LIST_OFFSET)`, "offset");
  return Number(v);
}

/**
 * A start that resumes after a position (the token's, checked by `check`) or skips `offset` rows;
 * an empty token is the start.
 */
export function startOf<P extends TokenPosition>(start: PageStart, check: (pos: TokenPosition) => pos is P): { after?: P; offset: number } {
  if (start.case === "pageToken" && start.value) return { after: decodeToken(start.value, check), offset: 0 };
  if (start.case === "offset") return { offset: offsetOf(start.value) };
  return { offset: 0 };
}

/** Where a list by seq starts (List methods): after the token's row, or `offset` rows in. */
export function listStart(start: PageStart): { after: ListCursor; offset: number } {
  const { after, offset } = startOf(start, counts("t", "c", "s"));
  return { after: after ?? { t: 0, c: 0, s: 0 }, offset };
}

/** Where a positional list (TraverseFileSets) starts: the token's position or the offset. */
export function positionStart(start: PageStart): number {
  const { after, offset } = startOf(start, counts("o"));
  return after ? after.o : offset;
}

/** Search tokens hold the last row's sort key and name (keyset paging: new rows cannot shift pages). */
export const isSearchCursor = (pos: TokenPosition): pos is { k: number | null; n: string } =>
  (pos["k"] === null || (typeof pos["k"] === "number" && Number.isSafeInteger(pos["k"]))) && typeof pos["n"] === "string";
