// CasIndexDO: which blobs the CAS holds (hash, size, last access) for one shard of one tenant,
// and the state of resumable ByteStream uploads of blobs in that shard. FindMissingBlobs is
// answered here, never by one R2 HEAD per digest.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env.ts";

export interface UploadSession {
  /** R2 key the multipart upload completes into, and its upload id. */
  r2Key: string;
  multipartId: string;
  parts: { partNumber: number; etag: string }[];
  /** Bytes durably stored in completed parts; what QueryWriteStatus reports. */
  committed: number;
  /** Serialized SHA-256 state over the committed bytes. */
  sha: string;
}

/** An upload not continued for this long is aborted, and its parts freed. */
export const UPLOAD_TTL_MS = 24 * 60 * 60 * 1000;

export class CasIndexDO extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, size INTEGER NOT NULL, last_access INTEGER NOT NULL)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS uploads (resource TEXT PRIMARY KEY, state TEXT NOT NULL, updated INTEGER NOT NULL)`);
  }

  /** The clock of touches and additions (tests set it). */
  now: () => number = () => Date.now();
  /** What this object has served since it was loaded: for the load simulator and operators. */
  private readonly served = { since: Date.now(), requests: 0, digests: 0, rowsWritten: 0 };

  /**
   * Returns the "hash/size" keys of the given blobs that are present. If asked, touches them, but
   * only those whose last access is older than `touchIntervalMs`: a warm FindMissing is a read.
   */
  present(blobs: [hash: string, size: number][], touch: boolean, touchIntervalMs = 0): string[] {
    this.served.requests++;
    this.served.digests += blobs.length;
    if (blobs.length === 0) return [];
    const rows = this.sql
      .exec<{ hash: string; size: number; last_access: number }>(
        `SELECT hash, size, last_access FROM blobs WHERE hash IN (SELECT value FROM json_each(?))`,
        JSON.stringify(blobs.map(([h]) => h)),
      )
      .toArray();
    const sizeOf = new Map<string, number>();
    for (const r of rows) sizeOf.set(r.hash, r.size);
    const found = blobs.filter(([h, s]) => sizeOf.get(h) === s);
    if (touch) {
      const now = this.now();
      const wanted = new Set(found.map(([h]) => h));
      const stale = rows.filter((r) => wanted.has(r.hash) && r.last_access <= now - touchIntervalMs).map((r) => r.hash);
      if (stale.length > 0) {
        const c = this.sql.exec(`UPDATE blobs SET last_access = ? WHERE hash IN (SELECT value FROM json_each(?))`, now, JSON.stringify(stale));
        this.served.rowsWritten += c.rowsWritten;
      }
    }
    return found.map(([h, s]) => `${h}/${s}`);
  }

  /** Records blobs that have landed in R2. */
  add(blobs: [hash: string, size: number][]): void {
    this.served.requests++;
    const now = this.now();
    for (const [hash, size] of blobs) {
      this.served.rowsWritten += this.sql.exec(
        `INSERT INTO blobs (hash, size, last_access) VALUES (?, ?, ?) ON CONFLICT(hash) DO UPDATE SET last_access = excluded.last_access`,
        hash,
        size,
        now,
      ).rowsWritten;
    }
  }

  /** Requests, digests looked up and rows written since this object was loaded; the blobs it holds. */
  stats() {
    const blobs = this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM blobs`).one().n;
    return { ...this.served, blobs };
  }

  /**
   * The shard count this tenant's index was built with (on its layout object only): the first
   * call records `shards`; later calls return what was recorded, so a changed count is noticed.
   */
  layout(shards: number): number {
    const recorded = this.ctx.storage.kv.get<number>("shards");
    if (recorded !== undefined) return recorded;
    this.ctx.storage.kv.put("shards", shards);
    return shards;
  }

  /** Forgets blobs (eviction goes through the index first, then R2). */
  remove(hashes: string[]): void {
    this.sql.exec(`DELETE FROM blobs WHERE hash IN (SELECT value FROM json_each(?))`, JSON.stringify(hashes));
  }

  getUpload(resource: string): UploadSession | null {
    const row = this.sql.exec<{ state: string }>(`SELECT state FROM uploads WHERE resource = ?`, resource).toArray()[0];
    return row ? (JSON.parse(row.state) as UploadSession) : null;
  }

  async putUpload(resource: string, session: UploadSession): Promise<void> {
    this.sql.exec(
      `INSERT INTO uploads (resource, state, updated) VALUES (?, ?, ?) ON CONFLICT(resource) DO UPDATE SET state = excluded.state, updated = excluded.updated`,
      resource,
      JSON.stringify(session),
      Date.now(),
    );
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + UPLOAD_TTL_MS);
  }

  deleteUpload(resource: string): void {
    this.sql.exec(`DELETE FROM uploads WHERE resource = ?`, resource);
  }

  /** Aborts abandoned uploads so their parts do not linger in R2. */
  async alarm(): Promise<void> {
    const cutoff = Date.now() - UPLOAD_TTL_MS;
    const stale = this.sql
      .exec<{ resource: string; state: string }>(`SELECT resource, state FROM uploads WHERE updated < ?`, cutoff)
      .toArray();
    for (const row of stale) {
      const s = JSON.parse(row.state) as UploadSession;
      await this.env.CAS.resumeMultipartUpload(s.r2Key, s.multipartId).abort().catch(() => {});
      this.sql.exec(`DELETE FROM uploads WHERE resource = ? AND updated < ?`, row.resource, cutoff);
    }
    const oldest = this.sql.exec<{ t: number | null }>(`SELECT MIN(updated) AS t FROM uploads`).one().t;
    if (oldest !== null) await this.ctx.storage.setAlarm(oldest + UPLOAD_TTL_MS);
  }
}
