// SchedulerDO: the queue of one (tenant, instance name, platform). Orders operations by
// ExecutionPolicy.priority (lower first, then arrival), joins identical in-flight actions to one
// operation, and hands operations to runners up to each runner's capacity.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env.ts";
import { configuredRunners, offers, runnerInfo, runnerKey, type RunnerRef } from "../src/execution/runners.ts";
import { noRunnerTimeoutMs } from "../src/config.ts";

export interface QueueEntry {
  name: string;
  priority: number;
  /** null: never merged (do_not_cache actions). */
  dedupKey: string | null;
  platform: [string, string][];
}

/** How long a busy or lost runner's operation waits before it is offered again. */
const RETRY_DELAY_MS = { busy: 500, lost: 2000 };

export class SchedulerDO extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS queue (
      name TEXT PRIMARY KEY, priority INTEGER NOT NULL, seq INTEGER NOT NULL, dedup_key TEXT,
      state TEXT NOT NULL, runner TEXT, not_before INTEGER NOT NULL DEFAULT 0)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS queue_dedup ON queue (dedup_key)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)`);
  }

  /** Queues an operation, or returns the in-flight operation it joins. */
  async enqueue(e: QueueEntry): Promise<{ name: string; joined: boolean }> {
    if (e.dedupKey) {
      const row = this.sql.exec<{ name: string }>(`SELECT name FROM queue WHERE dedup_key = ?`, e.dedupKey).toArray()[0];
      if (row) return { name: row.name, joined: true };
    }
    this.sql.exec(`INSERT OR REPLACE INTO meta (k, v) VALUES ('platform', ?)`, JSON.stringify(e.platform));
    const seq = this.sql.exec<{ n: number }>(`SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM queue`).one().n;
    this.sql.exec(
      `INSERT INTO queue (name, priority, seq, dedup_key, state) VALUES (?, ?, ?, ?, 'queued')`,
      e.name,
      e.priority,
      seq,
      e.dedupKey,
    );
    await this.ctx.storage.setAlarm(Date.now());
    return { name: e.name, joined: false };
  }

  /** The operation completed: its runner slot is free. */
  async finished(name: string): Promise<void> {
    this.sql.exec(`DELETE FROM queue WHERE name = ?`, name);
    await this.ctx.storage.setAlarm(Date.now());
  }

  /** A queued operation was cancelled. */
  async remove(name: string): Promise<void> {
    this.sql.exec(`DELETE FROM queue WHERE name = ?`, name);
  }

  /** The runner was busy or lost: offer the operation again shortly (to any runner). */
  async requeue(name: string, _runner: RunnerRef, lost: boolean): Promise<void> {
    const at = Date.now() + (lost ? RETRY_DELAY_MS.lost : RETRY_DELAY_MS.busy);
    this.sql.exec(`UPDATE queue SET state = 'queued', runner = NULL, not_before = ? WHERE name = ?`, at, name);
    await this.ctx.storage.setAlarm(at);
  }

  /** Queued and running operations, for tests and the UI. */
  snapshot(): { name: string; state: string; priority: number; runner: string | null }[] {
    return this.sql
      .exec<{ name: string; state: string; priority: number; runner: string | null }>(
        `SELECT name, state, priority, runner FROM queue ORDER BY priority, seq`,
      )
      .toArray();
  }

  async alarm(): Promise<void> {
    await this.pump();
  }

  /**
   * No runner (offering this platform) answers: queued operations wait, but not forever. Once
   * none has answered for NO_RUNNER_TIMEOUT_SECONDS while operations were queued, they complete
   * UNAVAILABLE, as Execute answers when no runner is reachable at all. Without this, an
   * operation whose runner died once runner statuses were no longer cached as up stayed QUEUED
   * for good, and every waiter with it.
   */
  private async failIfNoRunnerFor(now: number): Promise<void> {
    const queued = this.sql.exec<{ name: string }>(`SELECT name FROM queue WHERE state = 'queued'`).toArray();
    const row = this.sql.exec<{ v: string }>(`SELECT v FROM meta WHERE k = 'unreachable_since'`).toArray()[0];
    if (queued.length === 0) {
      if (row) this.sql.exec(`DELETE FROM meta WHERE k = 'unreachable_since'`);
      return;
    }
    if (!row) {
      this.sql.exec(`INSERT INTO meta (k, v) VALUES ('unreachable_since', ?)`, String(now));
      return;
    }
    const waitedMs = now - Number(row.v);
    if (waitedMs < noRunnerTimeoutMs()) return;
    const reason = `no runner has been reachable for ${Math.round(waitedMs / 1000)} s`;
    for (const { name } of queued) {
      this.sql.exec(`DELETE FROM queue WHERE name = ?`, name);
      await this.env.OPERATION.get(this.env.OPERATION.idFromName(name)).unavailable(reason);
    }
  }

  /** Hands queued operations to runners with free capacity, best priority first. */
  private async pump(): Promise<void> {
    const platformRow = this.sql.exec<{ v: string }>(`SELECT v FROM meta WHERE k = 'platform'`).toArray()[0];
    const platform = platformRow ? (JSON.parse(platformRow.v) as [string, string][]) : [];
    const infos = (await Promise.all(configuredRunners(this.env).map((r) => runnerInfo(this.env, r)))).filter(
      (i): i is NonNullable<typeof i> => i !== null && offers(i, platform),
    );
    const load = new Map<string, number>();
    for (const r of this.sql.exec<{ runner: string; n: number }>(
      `SELECT runner, COUNT(*) AS n FROM queue WHERE state = 'running' GROUP BY runner`,
    )) {
      load.set(r.runner, r.n);
    }
    const now = Date.now();
    if (infos.length === 0) await this.failIfNoRunnerFor(now);
    else this.sql.exec(`DELETE FROM meta WHERE k = 'unreachable_since'`);
    const ready = this.sql
      .exec<{ name: string }>(`SELECT name FROM queue WHERE state = 'queued' AND not_before <= ? ORDER BY priority, seq`, now)
      .toArray();
    for (const { name } of ready) {
      const free = infos
        .map((i) => ({ i, used: load.get(runnerKey(i.ref)) ?? 0 }))
        .filter(({ i, used }) => used < i.capacity)
        .sort((a, b) => a.used / a.i.capacity - b.used / b.i.capacity)[0];
      if (!free) break;
      const key = runnerKey(free.i.ref);
      load.set(key, free.used + 1);
      this.sql.exec(`UPDATE queue SET state = 'running', runner = ? WHERE name = ?`, key, name);
      const op = this.env.OPERATION.get(this.env.OPERATION.idFromName(name));
      await op.dispatch(free.i.ref);
    }
    const next = this.sql
      .exec<{ t: number | null }>(`SELECT MIN(not_before) AS t FROM queue WHERE state = 'queued'`)
      .one().t;
    // Waiting work and no runner free: look again soon (runners may come back or free up).
    if (next !== null) await this.ctx.storage.setAlarm(Math.max(next, now + (infos.length ? 1000 : 5000)));
  }
}
