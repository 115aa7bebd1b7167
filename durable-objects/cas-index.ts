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

  /** Returns the "hash/size" keys of the given blobs that are present, touching them if asked. */
  present(blobs: [hash: string, size: number][], touch: boolean): string[] {
    if (blobs.length === 0) return [];
    const hashes = JSON.stringify(blobs.map(([h]) => h));
    const rows = touch
      ? this.sql.exec<{ hash: string; size: number }>(
          `UPDATE blobs SET last_access = ? WHERE hash IN (SELECT value FROM json_each(?)) RETURNING hash, size`,
          Date.now(),
          hashes,
        )
      : this.sql.exec<{ hash: string; size: number }>(
          `SELECT hash, size FROM blobs WHERE hash IN (SELECT value FROM json_each(?))`,
          hashes,
        );
    const sizeOf = new Map<string, number>();
    for (const r of rows) sizeOf.set(r.hash, r.size);
    return blobs.filter(([h, s]) => sizeOf.get(h) === s).map(([h, s]) => `${h}/${s}`);
  }

  /** Records blobs that have landed in R2. */
  add(blobs: [hash: string, size: number][]): void {
    const now = Date.now();
    for (const [hash, size] of blobs) {
      this.sql.exec(
        `INSERT INTO blobs (hash, size, last_access) VALUES (?, ?, ?) ON CONFLICT(hash) DO UPDATE SET last_access = excluded.last_access`,
        hash,
        size,
        now,
      );
    }
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
