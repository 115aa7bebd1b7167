// CasIndexDO: which blobs the CAS holds (hash, size, last access) for one shard of one tenant,
// the bytes of its small blobs, and the state of resumable ByteStream uploads of blobs in that
// shard. FindMissingBlobs is answered here, never by one R2 HEAD per digest.
//
// Small blobs (SMALL_BLOB_MAX_BYTES and under) live here rather than in R2 (bb-storage's
// SizeDistinguishingBlobAccess, BuildBuddy's inline pebble values): a batch of them is one call
// and one transaction instead of an R2 put each, and their bytes go with their row, so eviction,
// healing and reconcile never see a row without its content.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env.ts";
import { casEvicts, evictionPolicy } from "../src/storage/eviction-policy.ts";
import { lastUsed } from "../src/storage/action-store.ts";
import { chunkAvgSize } from "../src/config.ts";
import { splitRecordKey } from "../src/storage/split-records.ts";
import {
  addPendingDeletes,
  bump,
  chooseVictims,
  clearPendingDeletes,
  EVICTION_MEMORY_MS,
  counters,
  ensureEvictionSchema,
  getMeta,
  nextEvictionDue,
  pendingDeletes,
  recentlyEvicted,
  rememberEvicted,
  setMeta,
  totals,
  type Counter,
  type ShardOwner,
} from "./cas-eviction.ts";

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

/** Rows one eviction or reconcile step handles (R2 deletes up to 1,000 keys per call). */
export const STEP_ROWS = 1000;
/** Blobs per R2 delete call, two keys each (R2 takes up to 1,000). */
const R2_DELETE_SLICE = 100;
/** While writes arrive and a budget is set, the shard checks it at least this often. */
const BUDGET_CHECK_MS = 60 * 1000;
/** How often the action-cache sweeper lists the tenant's entries. */
const AC_SWEEP_MS = 60 * 60 * 1000;
/** After an alarm that failed, the next one comes this long after it, doubling per failure in a row... */
const ALARM_RETRY_MS = 60 * 1000;
/** ...up to this. */
const ALARM_RETRY_MAX_MS = 60 * 60 * 1000;
/** Leeway for the worker's and this object's clocks when comparing their timestamps. */
const CLOCK_SKEW_MS = 60 * 1000;

export interface EvictStepOptions {
  /** The clock (tests pass a fake one; the alarm passes Date.now()). */
  now?: number;
  limit?: number;
  /** Instead of CAS_MAX_IDLE_DAYS for this step (an operator's "free what is idle for N now"). */
  maxIdleMs?: number;
  /** Runs after the rows are gone and before the objects are (tests inject faults here). */
  beforeObjectDelete?: (hashes: string[]) => Promise<void>;
}

export interface EvictStepResult {
  evicted: number;
  bytes: number;
  more: boolean;
}

export interface ShardStats {
  bytes: number;
  blobs: number;
  counters: Record<Counter, number>;
}

export interface ReconcileRangeResult {
  added: number;
  removed: number;
  /** Removals were cut off at the step's bound: call again with the same range. */
  more: boolean;
}

export class CasIndexDO extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  /** Blobs whose rows are gone and whose objects are being deleted, to the end of that delete. */
  private readonly evicting = new Map<string, Promise<void>>();
  /**
   * One set per add() waiting on R2 in lostToEviction: each eviction step puts the hashes whose
   * rows it deletes into every set, so that add learns of evictions that ran during its awaits.
   */
  private readonly evictedWhileChecking = new Set<Set<string>>();
  /** When this shard last evicted a blob (undefined: not read yet); see lastEvictionAt. */
  private lastEviction: number | undefined;
  /** The alarm as last set by this instance (undefined: not read yet). */
  private alarmAt: number | null | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, size INTEGER NOT NULL, last_access INTEGER NOT NULL)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS uploads (resource TEXT PRIMARY KEY, state TEXT NOT NULL, updated INTEGER NOT NULL)`);
    // Its own table, so that lookups and scans of `blobs` (FindMissing, eviction, totals) do not
    // page through blob bytes; the trigger makes every way a row goes (eviction, remove, reconcile)
    // take its bytes with it.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS small_blobs (hash TEXT PRIMARY KEY, data BLOB NOT NULL)`);
    this.sql.exec(`CREATE TRIGGER IF NOT EXISTS small_blob_goes_with_row AFTER DELETE ON blobs BEGIN DELETE FROM small_blobs WHERE hash = old.hash; END`);
    ensureEvictionSchema(this.sql);
  }

  /** The clock of touches and additions (tests set it). */
  now: () => number = () => Date.now();
  /** What this object has served since it was loaded: for the load simulator and operators. */
  private readonly served = { since: Date.now(), requests: 0, digests: 0, rowsWritten: 0 };

  /**
   * Of the blobs (hashes[i], sizes[i]), the positions of those present. If asked, touches them,
   * but only those whose last access is older than `touchIntervalMs`: a warm FindMissing is a read.
   * `hashes` is one JSON array text, handed to SQLite as it came: one string crosses from the
   * worker (not one per digest, each copied twice), and the join returns only the rows found,
   * with their positions, so nothing here is done per digest asked (measured: a FindMissing of
   * 10,000 digests spent more on the strings crossing and on a map of them than in SQLite).
   * What the join finds comes back as three parallel lists in one row (position, size, stale),
   * not a row object per blob found: for 5,000 present blobs that took this method from 14.6 to
   * 5.3 ms here, and a warm FindMissing is mostly present blobs.
   */
  present(hashes: string, sizes: number[], touch: boolean, touchIntervalMs = 0): number[] {
    this.served.requests++;
    this.served.digests += sizes.length;
    if (sizes.length === 0) return [];
    // Nothing is older than -1 (times are >= 0): no row counts as stale when not touching.
    const staleBefore = touch ? this.now() - touchIntervalMs : -1;
    // CROSS JOIN keeps json_each the outer loop: a primary-key lookup per hash, never a scan of blobs.
    // The three aggregates run over the same rows in the same order, so their lists line up.
    const { at, size, stale } = this.sql
      .exec<{ at: string | null; size: string | null; stale: string | null }>(
        `SELECT group_concat(j.key) AS at, group_concat(b.size) AS size, group_concat(b.last_access <= ?) AS stale
         FROM json_each(?) AS j CROSS JOIN blobs AS b ON b.hash = j.value`,
        staleBefore,
        hashes,
      )
      .one();
    if (at === null) return [];
    const ats = at.split(","), rowSizes = size!.split(","), stales = stale!.split(",");
    const found: number[] = [];
    const staleAt: number[] = [];
    for (let r = 0; r < ats.length; r++) {
      const i = Number(ats[r]);
      if (Number(rowSizes[r]) !== sizes[i]) continue; // the same hash with another size: not this blob
      found.push(i);
      if (stales[r] === "1") staleAt.push(i);
    }
    found.sort((a, b) => a - b); // in the order asked, whatever order SQLite gave
    if (staleAt.length > 0) {
      const all = JSON.parse(hashes) as string[];
      const c = this.sql.exec(`UPDATE blobs SET last_access = ? WHERE hash IN (SELECT value FROM json_each(?))`, this.now(), JSON.stringify(staleAt.map((i) => all[i])));
      this.served.rowsWritten += c.rowsWritten;
    }
    return found;
  }

  /**
   * Records blobs that have landed in R2. Returns the hashes NOT recorded: blobs that were being
   * evicted while they were written, whose objects the eviction deleted (the writer must retry).
   */
  async add(blobs: [hash: string, size: number][], owner?: ShardOwner): Promise<string[]> {
    this.served.requests++;
    if (owner) this.noteOwner(owner);
    const lost = await this.lostToEviction(blobs);
    const now = this.now();
    for (const [hash, size] of blobs) {
      if (lost.has(hash)) continue;
      this.served.rowsWritten += this.sql.exec(
        `INSERT INTO blobs (hash, size, last_access) VALUES (?, ?, ?) ON CONFLICT(hash) DO UPDATE SET last_access = excluded.last_access`,
        hash,
        size,
        now,
      ).rowsWritten;
    }
    await this.armEviction(now);
    return [...lost];
  }

  /**
   * Records small blobs with their bytes (verified by the caller against their hashes), each row
   * and its bytes in one transaction. No eviction check as in add(): an eviction running now
   * deletes rows first and then R2 objects, and these blobs have no object to lose.
   */
  addSmall(blobs: [hash: string, size: number, data: Uint8Array][], owner?: ShardOwner): Promise<void> {
    this.served.requests++;
    if (owner) this.noteOwner(owner);
    const now = this.now();
    this.ctx.storage.transactionSync(() => {
      for (const [hash, size, data] of blobs) {
        if (data.byteLength !== size) throw new Error(`small blob ${hash}: ${data.byteLength} bytes where ${size} were declared`);
        this.sql.exec(`INSERT INTO small_blobs (hash, data) VALUES (?, ?) ON CONFLICT(hash) DO UPDATE SET data = excluded.data`, hash, data);
        this.served.rowsWritten += this.sql.exec(
          `INSERT INTO blobs (hash, size, last_access) VALUES (?, ?, ?) ON CONFLICT(hash) DO UPDATE SET size = excluded.size, last_access = excluded.last_access`,
          hash,
          size,
          now,
        ).rowsWritten;
      }
    });
    return this.armEviction(now);
  }

  /** A small blob's size and bytes, if this shard holds them (null: not here; it may be in R2). */
  smallBlob(hash: string): { size: number; data: Uint8Array } | null {
    const row = this.sql
      .exec<{ size: number; data: ArrayBuffer }>(`SELECT b.size AS size, s.data AS data FROM small_blobs AS s JOIN blobs AS b ON b.hash = s.hash WHERE s.hash = ?`, hash)
      .toArray()[0];
    return row ? { size: row.size, data: new Uint8Array(row.data) } : null;
  }

  /**
   * Small blobs for a batch read, by position in `asked` (one call per shard, not per blob): the
   * stored size, with the bytes when it is the size asked (so the answer is never more than the
   * bytes asked for); "r2" when the blob is recorded without its bytes here (stored in R2 before
   * small blobs were kept in the index, or found there by reconcile); null when it is not recorded.
   */
  smallBlobs(asked: [hash: string, size: number][]): ({ size: number; data?: Uint8Array } | "r2" | null)[] {
    this.served.requests++;
    this.served.digests += asked.length;
    return asked.map(([hash, size]) => {
      const row = this.smallBlob(hash);
      if (row) return row.size === size ? row : { size: row.size };
      return this.sql.exec(`SELECT 1 FROM blobs WHERE hash = ?`, hash).toArray().length ? "r2" : null;
    });
  }

  /** Requests, digests looked up and rows written since this object was loaded; the blobs it holds. */
  servedStats() {
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
    await this.alarmNoLaterThan(Date.now() + UPLOAD_TTL_MS);
  }

  deleteUpload(resource: string): void {
    this.sql.exec(`DELETE FROM uploads WHERE resource = ?`, resource);
  }

  async alarm(): Promise<void> {
    this.alarmAt = null;
    let more = false;
    let failed = true;
    try {
      await this.abortStaleUploads();
      // Objects a step could not delete (R2 failing) first: they are billed, and counted as freed.
      more = await this.retryPendingDeletes();
      const policy = evictionPolicy(this.env);
      const owner = this.owner();
      if (casEvicts(policy)) more = (await this.evictStep()).more || more;
      if (owner?.sweepsActionCache && policy.acMaxIdleMs !== undefined) more = (await this.sweepActionCache()).more || more;
      failed = false;
    } finally {
      // Even after a failure: the runtime's own retries of a failed alarm end, and a shard that
      // nobody writes to would then never try again.
      await this.scheduleMaintenance(more, failed);
    }
  }

  /** Aborts abandoned uploads so their parts do not linger in R2. */
  private async abortStaleUploads(): Promise<void> {
    const cutoff = Date.now() - UPLOAD_TTL_MS;
    const stale = this.sql
      .exec<{ resource: string; state: string }>(`SELECT resource, state FROM uploads WHERE updated < ?`, cutoff)
      .toArray();
    for (const row of stale) {
      const s = JSON.parse(row.state) as UploadSession;
      await this.env.CAS.resumeMultipartUpload(s.r2Key, s.multipartId).abort().catch(() => {});
      this.sql.exec(`DELETE FROM uploads WHERE resource = ? AND updated < ?`, row.resource, cutoff);
    }
  }

  // ---- eviction, healing, reconcile, stats (see cas-eviction.ts for the bookkeeping) ----

  private ownerCache: ShardOwner | null | undefined;

  private owner(): ShardOwner | null {
    if (this.ownerCache === undefined) {
      const raw = getMeta(this.sql, "owner");
      this.ownerCache = raw ? (JSON.parse(raw) as ShardOwner) : null;
    }
    return this.ownerCache;
  }

  private noteOwner(o: ShardOwner): void {
    const cur = this.owner();
    if (cur && cur.tenant === o.tenant && cur.shards === o.shards && cur.sweepsActionCache === o.sweepsActionCache) return;
    setMeta(this.sql, "owner", JSON.stringify(o));
    this.ownerCache = o;
  }

  private r2Key = (tenant: string, hash: string) => `cas/${tenant}/${hash}`;

  /**
   * What R2 holds for a blob: its object and its split record under the chunker's parameters.
   * Records cut under other parameters (CHUNK_AVG_SIZE_BYTES changed since) are not found this
   * way and stay; they are never wrong, as a split depends only on the blob's bytes.
   */
  private objectKeys = (tenant: string, hash: string) => [this.r2Key(tenant, hash), splitRecordKey(tenant, hash, chunkAvgSize())];

  /**
   * One bounded eviction step: the chosen rows are deleted first (and made durable), then their
   * objects, so no reader is told "present" for a blob whose object is going. A blob written
   * again meanwhile waits in add() for the delete to finish (see lostToEviction).
   */
  async evictStep(opts: EvictStepOptions = {}): Promise<EvictStepResult> {
    const owner = this.owner();
    if (!owner) return { evicted: 0, bytes: 0, more: false };
    const policy = { ...evictionPolicy(this.env), ...(opts.maxIdleMs === undefined ? {} : { maxIdleMs: opts.maxIdleMs }) };
    const { victims, more } = chooseVictims(this.sql, opts.now ?? Date.now(), policy, owner.shards, opts.limit ?? STEP_ROWS);
    if (victims.length === 0) return { evicted: 0, bytes: 0, more };
    const hashes = victims.map((v) => v.hash);
    this.sql.exec(`DELETE FROM blobs WHERE hash IN (SELECT value FROM json_each(?))`, JSON.stringify(hashes));
    const bytes = victims.reduce((n, v) => n + v.size, 0);
    bump(this.sql, "evicted_idle", victims.filter((v) => v.reason === "idle").length);
    bump(this.sql, "evicted_budget", victims.filter((v) => v.reason === "budget").length);
    bump(this.sql, "evicted_bytes", bytes);
    await this.deleteObjects(owner, hashes, opts.beforeObjectDelete);
    return { evicted: victims.length, bytes, more };
  }

  /**
   * Deletes the objects of blobs whose rows are gone. Until R2 confirms a slice, its blobs stay in
   * pending_deletes, written in the caller's turn with the rows' deletion: a delete that fails (or
   * a restart before it) is retried by the alarm, never left as an object nothing will delete.
   */
  private async deleteObjects(owner: ShardOwner, hashes: string[], beforeObjectDelete?: (hashes: string[]) => Promise<void>): Promise<void> {
    for (const seen of this.evictedWhileChecking) for (const h of hashes) seen.add(h);
    this.lastEviction = Date.now();
    rememberEvicted(this.sql, hashes, this.lastEviction);
    addPendingDeletes(this.sql, hashes);
    let done!: () => void;
    const deleting = new Promise<void>((resolve) => (done = resolve));
    for (const h of hashes) this.evicting.set(h, deleting);
    try {
      await this.ctx.storage.sync();
      await beforeObjectDelete?.(hashes);
      // In slices, so that the shard's other calls (FindMissing) are answered between them.
      for (let i = 0; i < hashes.length; i += R2_DELETE_SLICE) {
        const slice = hashes.slice(i, i + R2_DELETE_SLICE);
        await this.env.CAS.delete(slice.flatMap((h) => this.objectKeys(owner.tenant, h)));
        clearPendingDeletes(this.sql, slice);
      }
    } catch (e) {
      // Called outside the alarm (an operator's evict), the retry still needs one.
      await this.alarmNoLaterThan(Date.now() + ALARM_RETRY_MS);
      throw e;
    } finally {
      for (const h of hashes) if (this.evicting.get(h) === deleting) this.evicting.delete(h);
      done();
    }
  }

  /** Retries deleting objects a step could not, STEP_ROWS at a time; true when more are waiting. */
  private async retryPendingDeletes(): Promise<boolean> {
    const owner = this.owner();
    if (!owner) return false;
    const hashes = pendingDeletes(this.sql, STEP_ROWS + 1);
    if (hashes.length === 0) return false;
    await this.deleteObjects(owner, hashes.slice(0, STEP_ROWS));
    return hashes.length > STEP_ROWS;
  }

  /**
   * Of blobs being added, those an eviction deleted after their write landed: blobs evicted lately
   * (or being evicted) are recorded only if their object is there once the eviction is over.
   * Resolves in the same turn as its last check, so add() records what it returns before any
   * other call runs.
   */
  private async lostToEviction(blobs: [hash: string, size: number][]): Promise<Set<string>> {
    const lost = new Set<string>();
    const owner = this.owner();
    if (!owner) return lost;
    // Most adds come long after this shard last evicted anything (or it never has): no lookup.
    if (this.evicting.size === 0 && Date.now() > this.lastEvictionAt() + EVICTION_MEMORY_MS) return lost;
    const suspect = recentlyEvicted(this.sql, blobs.map(([h]) => h));
    // Each await below lets the alarm run an eviction step, which may take rows (then objects) of
    // this batch's other blobs, checked already or found unsuspected before it ran: those are lost too.
    const evictedMeanwhile = await this.watchingEvictions(async () => {
      for (const [hash, size] of blobs) {
        if (!suspect.has(hash) && !this.evicting.has(hash)) continue;
        await this.evicting.get(hash);
        if (await this.objectIs(owner, hash, size)) this.sql.exec(`DELETE FROM recently_evicted WHERE hash = ?`, hash);
        else lost.add(hash);
      }
    });
    for (const [hash] of blobs) if (evictedMeanwhile.has(hash)) lost.add(hash);
    return lost;
  }

  /**
   * Runs `look` (which awaits R2, letting eviction steps run) and returns the hashes whose rows
   * any step deleted meanwhile (deleteObjects fills the set), for the caller to leave out.
   */
  private async watchingEvictions(look: () => Promise<void>): Promise<Set<string>> {
    const evictedMeanwhile = new Set<string>();
    this.evictedWhileChecking.add(evictedMeanwhile);
    try {
      await look();
      return evictedMeanwhile;
    } finally {
      this.evictedWhileChecking.delete(evictedMeanwhile);
    }
  }

  /** When this shard last evicted a blob (ms; -Infinity: never), read once from its table. */
  private lastEvictionAt(): number {
    this.lastEviction ??= this.sql.exec<{ at: number | null }>(`SELECT MAX(at) AS at FROM recently_evicted`).one().at ?? -Infinity;
    return this.lastEviction;
  }

  private async objectIs(owner: ShardOwner, hash: string, size: number): Promise<boolean> {
    return (await this.env.CAS.head(this.r2Key(owner.tenant, hash)))?.size === size;
  }

  /**
   * A read found no object: drops the rows, unless the blob was recorded since `notTouchedSince`
   * (written again after the read began) or is a small blob held here. Returns how many rows went.
   * No leeway either way: one that keeps rows leaves a blob lost just after its write unhealed for
   * the next build (which then trusts a FindMissing that is wrong), one that drops rows loses writes
   * acknowledged after the read began. The worker's clock only lags (it stands still between its
   * I/O), so a row recorded after the read began always has the later time and is kept.
   */
  forget(hashes: string[], notTouchedSince: number): number {
    const gone = this.sql
      .exec(
        `DELETE FROM blobs WHERE hash IN (SELECT value FROM json_each(?)) AND last_access <= ? AND hash NOT IN (SELECT hash FROM small_blobs) RETURNING hash`,
        JSON.stringify(hashes),
        notTouchedSince,
      )
      .toArray().length;
    bump(this.sql, "healed", gone);
    return gone;
  }

  /**
   * Repairs this shard's rows with hashes in (after, upTo] (upTo null: no end) against the R2
   * objects listed there at `listedAt` that belong to this shard: rows without an object go (at
   * most STEP_ROWS*5 per call), objects without a row are added. Small blobs held here have no
   * object and are left alone.
   */
  async reconcileRange(after: string, upTo: string | null, objects: [hash: string, size: number][], listedAt: number, owner: ShardOwner): Promise<ReconcileRangeResult> {
    this.noteOwner(owner);
    const listed = new Map(objects);
    const rows = this.sql
      .exec<{ hash: string; size: number; last_access: number; small: number }>(
        `SELECT hash, size, last_access, hash IN (SELECT hash FROM small_blobs) AS small FROM blobs WHERE hash > ? AND (? IS NULL OR hash <= ?) ORDER BY hash`,
        after,
        upTo,
        upTo,
      )
      .toArray();
    const known = new Set<string>();
    const stale: string[] = [];
    for (const r of rows) {
      known.add(r.hash);
      if (r.small) continue;
      // A row written after the listing may name an object the listing could not see yet.
      if (listed.get(r.hash) !== r.size && r.last_access <= listedAt - CLOCK_SKEW_MS) stale.push(r.hash);
    }
    const maxRemovals = STEP_ROWS * 5;
    const removing = stale.slice(0, maxRemovals);
    if (removing.length) this.sql.exec(`DELETE FROM blobs WHERE hash IN (SELECT value FROM json_each(?))`, JSON.stringify(removing));
    let toAdd = objects.filter(([h]) => !known.has(h));
    // A listed object an eviction has deleted since (or is deleting): look before re-adding it.
    const suspect = recentlyEvicted(this.sql, toAdd.map(([h]) => h));
    for (const [h] of toAdd) if (this.evicting.has(h)) suspect.add(h);
    if (suspect.size) {
      // As in lostToEviction: a delete that starts while these awaits run (the alarm retrying a
      // pending delete) is learnt of here, and its blobs are not recorded.
      let there: boolean[] = [];
      const evictedMeanwhile = await this.watchingEvictions(async () => {
        await Promise.all([...suspect].map((h) => this.evicting.get(h)));
        there = await Promise.all(toAdd.map(([h, s]) => !suspect.has(h) || this.objectIs(owner, h, s)));
      });
      toAdd = toAdd.filter(([h], i) => there[i] && !evictedMeanwhile.has(h));
    }
    const now = Date.now();
    for (const [hash, size] of toAdd) {
      this.sql.exec(`INSERT INTO blobs (hash, size, last_access) VALUES (?, ?, ?) ON CONFLICT(hash) DO NOTHING`, hash, size, now);
    }
    bump(this.sql, "reconcile_removed", removing.length);
    bump(this.sql, "reconcile_added", toAdd.length);
    if (toAdd.length) await this.armEviction(now);
    return { added: toAdd.length, removed: removing.length, more: stale.length > removing.length };
  }

  stats(): ShardStats {
    return { ...totals(this.sql), counters: counters(this.sql) };
  }

  /**
   * One bounded pass of the action-cache sweeper: deletes the tenant's entries not written or
   * refreshed (a hit refreshes an entry, see action-store.ts) within AC_MAX_IDLE_DAYS.
   */
  async sweepActionCache(now = Date.now()): Promise<{ deleted: number; more: boolean }> {
    const owner = this.owner();
    const maxIdle = evictionPolicy(this.env).acMaxIdleMs;
    if (!owner || maxIdle === undefined) return { deleted: 0, more: false };
    const prefix = `ac/${owner.tenant}/`;
    const cursor = getMeta(this.sql, "ac_cursor") || undefined;
    const page = await this.env.CAS.list({ prefix, startAfter: cursor, limit: STEP_ROWS, include: ["customMetadata"] });
    const old = page.objects.filter((o) => lastUsed(o) < now - maxIdle).map((o) => o.key);
    if (old.length) await this.env.CAS.delete(old);
    bump(this.sql, "ac_expired", old.length);
    setMeta(this.sql, "ac_cursor", page.truncated ? page.objects.at(-1)!.key : "");
    return { deleted: old.length, more: page.truncated };
  }

  /** Makes sure an alarm will look at the budget soon after writes (and at idle blobs later). */
  private async armEviction(now: number): Promise<void> {
    const policy = evictionPolicy(this.env);
    if (!casEvicts(policy) && !(this.owner()?.sweepsActionCache && policy.acMaxIdleMs !== undefined)) return;
    if (policy.maxBytes === undefined) {
      if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
      if (this.alarmAt === null) await this.alarmNoLaterThan(now + BUDGET_CHECK_MS);
      return;
    }
    await this.alarmNoLaterThan(now + BUDGET_CHECK_MS);
  }

  private async alarmNoLaterThan(t: number): Promise<void> {
    if (this.alarmAt === undefined) this.alarmAt = await this.ctx.storage.getAlarm();
    if (this.alarmAt !== null && this.alarmAt <= t) return;
    await this.ctx.storage.setAlarm(t);
    this.alarmAt = t;
  }

  /**
   * The next alarm: the earliest of upload expiry, eviction due, the action-cache sweep; after an
   * alarm that failed, a backoff (what failed is due again at once, and R2 may still be failing).
   */
  private async scheduleMaintenance(more: boolean, failed = false): Promise<void> {
    const now = Date.now();
    const before = Number(getMeta(this.sql, "alarm_failures") ?? 0);
    const failures = failed ? before + 1 : 0;
    if (failures !== before) setMeta(this.sql, "alarm_failures", String(failures));
    if (failed) {
      // Set outright: it replaces whatever this failed run set (deleteObjects' own retry).
      this.alarmAt = now + Math.min(ALARM_RETRY_MS * 2 ** (failures - 1), ALARM_RETRY_MAX_MS);
      await this.ctx.storage.setAlarm(this.alarmAt);
      return;
    }
    const policy = evictionPolicy(this.env);
    const owner = this.owner();
    const due: number[] = [];
    const oldestUpload = this.sql.exec<{ t: number | null }>(`SELECT MIN(updated) AS t FROM uploads`).one().t;
    if (oldestUpload !== null) due.push(oldestUpload + UPLOAD_TTL_MS);
    if (more) due.push(now + 1000);
    if (owner && casEvicts(policy)) {
      const t = nextEvictionDue(this.sql, policy, owner.shards);
      if (t !== null) due.push(Math.max(t, now + 1000));
    }
    if (owner?.sweepsActionCache && policy.acMaxIdleMs !== undefined) due.push(now + AC_SWEEP_MS);
    if (due.length) await this.alarmNoLaterThan(Math.min(...due));
  }
}
