// Keeps the cross-invocation search index (D1, src/resultstore/search-index.ts) in step with one
// invocation: every committed mutation queues the names it touched in index_pending (in the same
// transaction), and a flush writes their current rows. Flushes run one at a time, so an older row
// can never land after a newer one; a failed flush leaves the queue for the alarm to retry, later
// after each failure in a row. A row that can never fit D1 is dead-lettered instead: logged,
// counted in index_dead_letters, and off the queue.
import { logDeadLetter, neverFits, retryDelayMs } from "../storage/index-retry.ts";
import { removeInvocationFromIndex, writeSearchIndex, type IndexChange, type IndexedKind, type UnfitChange } from "./search-index.ts";
import { tally } from "../metrics/request-tally.ts";

/** Rows per writeSearchIndex call: bounds one call's memory on a 25,000-resource batch. */
const CHUNK = 500;

export class IndexSync {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly sql: SqlStorage,
    private readonly db: D1Database,
  ) {}

  pending(): boolean {
    return this.sql.exec(`SELECT 1 FROM index_pending LIMIT 1`).toArray().length > 0;
  }

  /** Rows dead-lettered so far (never written: over D1's row limit). */
  deadLetters(): number {
    return this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM index_dead_letters`).one().n;
  }

  /** When to try again: 10 s after a success (more is queued), backing off after failures in a row. */
  retryDelayMs(): number {
    return retryDelayMs(this.failures());
  }

  private failures(): number {
    return Number(this.sql.exec<{ v: number }>(`SELECT v FROM meta WHERE k = 'index_failures'`).toArray()[0]?.v ?? 0);
  }

  private setFailures(n: number): void {
    if (n === 0 && this.failures() > 0) tally("kiln_index_retry_cleared_total", { index: "resultstore" });
    if (n === 0) this.sql.exec(`DELETE FROM meta WHERE k = 'index_failures'`);
    else this.sql.exec(`INSERT OR REPLACE INTO meta (k, v) VALUES ('index_failures', ?)`, n);
  }

  private failed(what: string, e: unknown): false {
    const failures = this.failures() + 1;
    if (failures === 1) tally("kiln_index_retry_entered_total", { index: "resultstore" });
    this.setFailures(failures);
    console.error(`search index ${what} failed (${failures} in a row); the alarm retries in ${retryDelayMs(failures) / 1000} s`, e);
    tally("kiln_index_write_failures_total", { index: "resultstore" });
    return false;
  }

  private deadLetter(tenant: string, { change, bytes, reason }: UnfitChange): void {
    this.sql.exec(`INSERT OR REPLACE INTO index_dead_letters (name, kind, bytes, reason, at) VALUES (?, ?, ?, ?, ?)`, change.name, change.kind, bytes, reason, Date.now());
    logDeadLetter("resultstore_search", { tenant, name: change.name, kind: change.kind, bytes, reason, total: this.deadLetters() });
  }

  /**
   * Writes the changes. When D1 says a statement can never run, the changes are written one at a
   * time to find which; that one comes back as unfit. Rejects on any other failure.
   */
  private async write(tenant: string, changes: IndexChange[]): Promise<UnfitChange[]> {
    try {
      return await writeSearchIndex(this.db, tenant, changes);
    } catch (e) {
      if (!neverFits(e)) throw e;
      if (changes.length === 1) return [{ change: changes[0]!, bytes: null, reason: `D1 refused the row: ${String(e)}` }];
    }
    const unfit: UnfitChange[] = [];
    for (const c of changes) unfit.push(...(await this.write(tenant, [c])));
    return unfit;
  }

  /** Writes every queued change; resolves false (and leaves the rest queued) when D1 refused. */
  flush(tenant: string, uploadStatus: () => number): Promise<boolean> {
    return this.serialized(async () => {
      for (;;) {
        const rows = this.sql
          .exec<{ name: string; kind: IndexedKind; ver: number; data: ArrayBuffer | null }>(
            `SELECT p.name, p.kind, p.ver, r.data FROM index_pending p LEFT JOIN resources r ON r.name = p.name ORDER BY p.ver LIMIT ?`,
            CHUNK,
          )
          .toArray();
        if (rows.length === 0) return true;
        const changes: IndexChange[] = rows.map((r) => ({
          kind: r.kind,
          name: r.name,
          data: r.data ? new Uint8Array(r.data) : null,
          ...(r.kind === "invocation" ? { uploadStatus: uploadStatus() } : {}),
        }));
        let unfit: UnfitChange[];
        try {
          unfit = await this.write(tenant, changes);
        } catch (e) {
          return this.failed("write", e);
        }
        for (const u of unfit) this.deadLetter(tenant, u);
        this.setFailures(0);
        // Only the versions written leave the queue; a newer change of the same name stays.
        this.sql.exec(
          `DELETE FROM index_pending WHERE (name, ver) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))`,
          JSON.stringify(rows.map((r) => [r.name, r.ver])),
        );
      }
    });
  }

  /** Removes the invocation's rows (DeleteInvocation); false when D1 refused. */
  remove(tenant: string, invocationName: string): Promise<boolean> {
    return this.serialized(async () => {
      try {
        await removeInvocationFromIndex(this.db, tenant, invocationName);
        this.setFailures(0);
        return true;
      } catch (e) {
        return this.failed("removal", e);
      }
    });
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}
