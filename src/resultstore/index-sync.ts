// Keeps the cross-invocation search index (D1, src/resultstore/search-index.ts) in step with one
// invocation: every committed mutation queues the names it touched in index_pending (in the same
// transaction), and a flush writes their current rows. Flushes run one at a time, so an older row
// can never land after a newer one; a failed flush leaves the queue for the alarm to retry.
import { removeInvocationFromIndex, writeSearchIndex, type IndexChange, type IndexedKind } from "./search-index.ts";
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
        try {
          await writeSearchIndex(this.db, tenant, changes);
        } catch (e) {
          console.error("search index write failed; the alarm retries", e);
          tally("kiln_index_write_failures_total", { index: "resultstore" });
          return false;
        }
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
        return true;
      } catch (e) {
        console.error("search index removal failed; the alarm retries", e);
        tally("kiln_index_write_failures_total", { index: "resultstore" });
        return false;
      }
    });
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}
