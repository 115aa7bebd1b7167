// How the writers of the D1 indexes (the operations listing, the ResultStore search index) retry:
// with backoff on failures that may pass (D1 unavailable or overloaded, a schema not yet migrated),
// and never for a row that can never fit: that one is dead-lettered, logged and counted.

/** The first retry comes after 10 s, then twice as late each time, at most 10 minutes apart. */
export function retryDelayMs(failures: number): number {
  return Math.min(10_000 * 2 ** Math.max(0, failures - 1), 600_000);
}

/** D1's answers to a statement it can never run, however often it is retried (a row, string or statement too big). */
export function neverFits(e: unknown): boolean {
  return /SQLITE_TOOBIG|too big|too large|exceeds? the (maximum|limit)/i.test(e instanceof Error ? e.message : String(e));
}

/** One JSON line per dead-lettered row, for Workers Logs; the caller keeps the count. */
export function logDeadLetter(index: string, fields: Record<string, unknown>): void {
  console.error(JSON.stringify({ event: "index_dead_letter", index, ...fields }));
}
