// RunnerPoolDO: one shard of the runner pool, and the one owner of queue state. It holds
// - the queue of operations routed to this shard (priority, in-flight dedup, leases, attempts),
// - the runners connected to it over hibernatable WebSockets (an idle fleet costs no duration:
//   runners' keep-alive pings are answered by the runtime without waking the object),
// - an outbox of events for OperationDOs, delivered in order and retried until they land.
// Its alarm is the watchdog: it expires leases that heartbeats stopped renewing (re-queueing the
// action, at most MAX_ATTEMPTS runs), fails queued work no runner has come for, retries the
// outbox, and offers queued work again. No request is held while an action runs.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { DurableObject } from "cloudflare:workers";
import { ActionSchema, CommandSchema, ExecuteResponseSchema } from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.ts";
import {
  PoolMessageSchema,
  RunnerMessageSchema,
  type Hello,
  type PoolMessage,
} from "../src/gen/kiln/runner/v1/runner_pb.ts";
import type { Env } from "../src/env.ts";
import { heartbeatIntervalMs, leaseDurationMs, noRunnerTimeoutMs, poolShardCount, publicUrl } from "../src/config.ts";
import { PART_BYTES, partsOf } from "../src/execution/stored-parts.ts";
import { concatBytes } from "../src/shared/concat-bytes.ts";
import { faultPoint } from "../src/execution/faults.ts";
import { storedOperationStub } from "../src/execution/operation-stub.ts";
import { describePlatform, offers, type EnqueueResult, type OperationEvent, type PoolEntry } from "../src/execution/pool.ts";
import { mintToken } from "../src/execution/tokens.ts";
import { logStreamName } from "../src/execution/log-streams.ts";
import { wakeContainers } from "../src/execution/containers.ts";

/** A runner lost this many times fails the operation with UNAVAILABLE. */
export const MAX_ATTEMPTS = 3;
/** Lease tokens outlive the lease by this much: time to upload outputs and report after a hiccup. */
const TOKEN_GRACE_MS = 30 * 60_000;
/** While work waits and nothing else is due, the watchdog looks again this often. */
const WATCHDOG_MS = 5_000;
/** A lost lease's action waits this long before it is offered again (the runner may be flapping). */
const LOST_RETRY_MS = 2_000;
/** A refused action waits this long, so a runner that keeps refusing cannot make the pool spin. */
const REFUSED_RETRY_MS = 100;

/** What a WebSocket carries across hibernation. */
interface Attachment {
  credential: string;
  /** null: the runner may run any tenant's actions. */
  tenant: string | null;
  runnerId?: string;
  slots?: number;
  properties?: [string, string][];
}

interface LiveRunner {
  id: string;
  ws: WebSocket;
  credential: string;
  tenant: string | null;
  slots: number;
  properties: [string, string][];
}

type QueueRow = {
  name: string;
  tenant: string;
  instance_name: string;
  action_hash: string;
  action_size: number;
  priority: number;
  seq: number;
  dedup_key: string | null;
  platform: string;
  timeout_ms: number;
  queued_at: number;
  action: ArrayBuffer;
  command: ArrayBuffer;
  state: "queued" | "leased";
  runner: string | null;
  lease_id: string | null;
  attempt: number;
  lease_expires: number | null;
  not_before: number;
  cancel_requested: number;
};

export interface PoolSnapshot {
  queue: { name: string; state: string; priority: number; runner: string | null; attempt: number }[];
  runners: { id: string; free: number; slots: number; connections: number }[];
  outbox: number;
}

export interface PoolStats {
  queued: number;
  running: number;
  runners: number;
  slots: number;
  outbox: number;
}

/**
 * How long the pool remembers an operation it finished. A reconcile that crossed the completion
 * arrives within seconds; an operation not told of its completion still has it in the outbox.
 */
const FINISHED_MEMORY_MS = 3600_000;

export class RunnerPoolDO extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS queue (
      name TEXT PRIMARY KEY, tenant TEXT NOT NULL, instance_name TEXT NOT NULL, action_hash TEXT NOT NULL,
      action_size INTEGER NOT NULL, priority INTEGER NOT NULL, seq INTEGER NOT NULL, dedup_key TEXT,
      platform TEXT NOT NULL, timeout_ms INTEGER NOT NULL, queued_at INTEGER NOT NULL,
      action BLOB NOT NULL, command BLOB NOT NULL,
      state TEXT NOT NULL, runner TEXT, lease_id TEXT, attempt INTEGER NOT NULL DEFAULT 0,
      lease_expires INTEGER, not_before INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS queue_order ON queue (state, priority, seq)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS queue_dedup ON queue (dedup_key)`);
    this.sql.exec(`CREATE UNIQUE INDEX IF NOT EXISTS queue_lease ON queue (lease_id)`);
    // Free slots as this shard believes them: a runner refuses work it has no slot for, which
    // sets its count to what it reports, so a mistaken belief costs one round trip, never a slot.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS runners (id TEXT PRIMARY KEY, free INTEGER NOT NULL, slots INTEGER NOT NULL)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS outbox (
      id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, event TEXT NOT NULL, response BLOB,
      tries INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)`);
    // An event's response over PART_BYTES, in parts (rows over 2 MB are refused: stored-parts.ts).
    this.sql.exec(`CREATE TABLE IF NOT EXISTS outbox_parts (outbox_id INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (outbox_id, seq))`);
    // Operations finished here lately: a reconcile that crossed their completion must not queue them again.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS finished (name TEXT PRIMARY KEY, at INTEGER NOT NULL)`);
    // Queued operations no connected runner can take (their platform or tenant), since when.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS unmatched (name TEXT PRIMARY KEY, since INTEGER NOT NULL)`);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  // ---- operations' side ----------------------------------------------------------------------

  /** Queues an operation, or names the in-flight operation it joins. Idempotent per name. */
  async enqueue(e: PoolEntry): Promise<EnqueueResult> {
    faultPoint("pool.enqueue");
    this.setShard(e.shard);
    if (this.row(e.name)) return { kind: "queued", name: e.name };
    if (e.dedupKey) {
      // Not one whose cancellation is under way: it will end CANCELLED, which this caller never asked for.
      const same = this.sql.exec<{ name: string }>(`SELECT name FROM queue WHERE dedup_key = ? AND cancel_requested = 0`, e.dedupKey).toArray()[0];
      if (same) return { kind: "joined", name: same.name };
    }
    const runners = this.liveRunners().filter((r) => r.tenant === null || r.tenant === e.tenant);
    if (runners.length > 0 && !runners.some((r) => offers(r.properties, e.platform))) {
      const offered = [...new Set(runners.flatMap((r) => r.properties.map(([k, v]) => `${k}=${v}`)))];
      return { kind: "refused", reason: `no runner offers the platform ${describePlatform(e.platform)}; runners offer: ${offered.join(", ") || "(nothing)"}` };
    }
    this.insert(e);
    if (e.origin) this.sql.exec(`INSERT OR REPLACE INTO meta (k, v) VALUES ('origin', ?)`, e.origin);
    await this.pump();
    return { kind: "queued", name: e.name };
  }

  /** Where runner containers dial: PUBLIC_URL, else the origin of the latest Execute call queued here. */
  containerUrl(): string | undefined {
    const origin = this.sql.exec<{ v: string }>(`SELECT v FROM meta WHERE k = 'origin'`).toArray()[0]?.v;
    return publicUrl(this.env, origin);
  }

  /**
   * An unfinished operation asking about itself. The pool re-queues it if it lost track (an
   * enqueue that failed half-way), and redelivers a completion it has not yet delivered. One it
   * finished lately is not queued again: the question crossed the completion on its way.
   */
  async ensure(e: PoolEntry): Promise<"queued" | "leased" | "completing" | "requeued"> {
    this.setShard(e.shard);
    const row = this.row(e.name);
    if (row) return row.state;
    if (this.sql.exec(`SELECT 1 FROM outbox WHERE name = ? AND event LIKE '{"kind":"completed"%'`, e.name).toArray().length) {
      await this.flushOutbox();
      return "completing";
    }
    if (this.sql.exec(`SELECT 1 FROM finished WHERE name = ?`, e.name).toArray().length) return "completing";
    this.insert({ ...e, dedupKey: null });
    await this.pump();
    return "requeued";
  }

  /** CancelOperation: a queued operation completes at once; a leased one is cancelled on its runner. */
  async cancel(name: string): Promise<void> {
    const row = this.row(name);
    if (!row) return;
    if (row.state === "queued") {
      this.finish(row, cancelled("cancelled before it started"));
    } else {
      this.sql.exec(`UPDATE queue SET cancel_requested = 1 WHERE name = ?`, name);
      this.send(row.runner!, cancelMessage(row.lease_id!, "cancelled by the client"));
    }
    await this.flushOutbox();
    await this.scheduleAlarm();
  }

  /** Drops an operation that no longer exists (nobody can see its result): the run is cancelled. */
  async forget(name: string): Promise<void> {
    const row = this.row(name);
    if (!row) return;
    this.sql.exec(`DELETE FROM queue WHERE name = ?`, name);
    this.sql.exec(`DELETE FROM outbox_parts WHERE outbox_id IN (SELECT id FROM outbox WHERE name = ?)`, name);
    this.sql.exec(`DELETE FROM outbox WHERE name = ?`, name);
    if (row.state === "leased") this.send(row.runner!, cancelMessage(row.lease_id!, "the operation no longer exists"));
  }

  // ---- runners' side: RunnerService calls, verified by the worker ------------------------------

  /** The outcome of a lease. Dropped (accepted: false) unless the lease is still current. */
  async complete(leaseId: string, response: Uint8Array): Promise<{ accepted: boolean; reason: string }> {
    faultPoint("pool.complete");
    const row = this.sql.exec<QueueRow>(`SELECT * FROM queue WHERE lease_id = ?`, leaseId).toArray()[0];
    if (!row || row.state !== "leased") return { accepted: false, reason: "the lease is no longer current (it expired, or the operation was re-queued or finished)" };
    this.sql.exec(`UPDATE runners SET free = MIN(slots, free + 1) WHERE id = ?`, row.runner);
    this.finish(row, response);
    await this.flushOutbox();
    await this.pump();
    return { accepted: true, reason: "" };
  }

  /** Whether a lease is current (AppendLog checks this before accepting output). */
  leaseCurrent(leaseId: string): boolean {
    return this.sql.exec(`SELECT 1 FROM queue WHERE lease_id = ? AND state = 'leased'`, leaseId).toArray().length > 0;
  }

  // ---- the WebSocket ---------------------------------------------------------------------------

  /** The worker has authenticated the runner's credential; accept its connection. */
  async fetch(request: Request): Promise<Response> {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") return new Response("expected a WebSocket upgrade", { status: 426 });
    this.setShard(Number(request.headers.get("x-kiln-pool-shard") ?? 0));
    const credential = request.headers.get("x-kiln-runner-credential") ?? "unknown";
    const tenant = request.headers.get("x-kiln-runner-tenant") || null;
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ credential, tenant } satisfies Attachment);
    return new Response(null, { status: 101, webSocket: client });
  }

  async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    if (typeof data === "string") return; // keep-alive text the auto-response did not catch
    let msg;
    try {
      msg = fromBinary(RunnerMessageSchema, new Uint8Array(data));
    } catch {
      return this.goodbye(ws, Code.InvalidArgument, "a frame is not a kiln.runner.v1.RunnerMessage");
    }
    const a = ws.deserializeAttachment() as Attachment;
    if (msg.kind.case === "hello") return this.hello(ws, a, msg.kind.value);
    if (!a.runnerId) return this.goodbye(ws, Code.FailedPrecondition, "the first message must be Hello");
    const now = Date.now();
    switch (msg.kind.case) {
      case "accepted": {
        const row = this.sql.exec<QueueRow>(`SELECT * FROM queue WHERE lease_id = ? AND runner = ?`, msg.kind.value.leaseId, a.runnerId).toArray()[0];
        if (!row) return this.send(a.runnerId, cancelMessage(msg.kind.value.leaseId, "the lease is no longer current"));
        this.sql.exec(`UPDATE queue SET lease_expires = ? WHERE name = ?`, now + leaseDurationMs(), row.name);
        this.outbox(row.name, { kind: "started", attempt: row.attempt, runner: a.runnerId });
        break;
      }
      case "refused": {
        const v = msg.kind.value;
        this.sql.exec(`UPDATE runners SET free = ? WHERE id = ?`, Math.min(v.freeSlots, a.slots ?? 0), a.runnerId);
        // A refusal is not a lost run: the attempt is given back.
        this.sql.exec(
          `UPDATE queue SET state = 'queued', runner = NULL, lease_id = NULL, lease_expires = NULL, attempt = attempt - 1, not_before = ?
           WHERE lease_id = ? AND runner = ?`,
          now + REFUSED_RETRY_MS,
          v.leaseId,
          a.runnerId,
        );
        break;
      }
      case "ready":
        this.sql.exec(`UPDATE runners SET free = ? WHERE id = ?`, Math.min(msg.kind.value.freeSlots, a.slots ?? 0), a.runnerId);
        break;
      case "heartbeat":
        for (const p of msg.kind.value.running) {
          const renewed = this.sql.exec(`UPDATE queue SET lease_expires = ? WHERE lease_id = ? AND runner = ? AND state = 'leased'`, now + leaseDurationMs(), p.leaseId, a.runnerId).rowsWritten;
          if (!renewed) this.send(a.runnerId, cancelMessage(p.leaseId, "the lease is no longer current"));
        }
        break;
    }
    await this.flushOutbox();
    await this.pump();
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // already closed
    }
    // Leases of a runner that went away expire on their own: it may reconnect and keep them.
    await this.scheduleAlarm();
  }

  async webSocketError(ws: WebSocket): Promise<void> {
    await this.webSocketClose(ws, 1011, "error");
  }

  private async hello(ws: WebSocket, a: Attachment, h: Hello): Promise<void> {
    if (!/^[\w.:@-]{1,128}$/.test(h.runnerId)) return this.goodbye(ws, Code.InvalidArgument, "runner_id must be 1-128 of [A-Za-z0-9_.:@-]");
    if (h.slots < 1 || h.slots > 4096) return this.goodbye(ws, Code.InvalidArgument, "slots must be 1..4096");
    const properties = h.properties.map((p) => [p.name, p.value] as [string, string]);
    ws.serializeAttachment({ ...a, runnerId: h.runnerId, slots: h.slots, properties } satisfies Attachment);
    const leased = this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM queue WHERE runner = ? AND state = 'leased'`, h.runnerId).one().n;
    this.sql.exec(
      `INSERT INTO runners (id, free, slots) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET free = excluded.free, slots = excluded.slots`,
      h.runnerId,
      Math.max(0, h.slots - leased),
      h.slots,
    );
    ws.send(
      toBinary(
        PoolMessageSchema,
        create(PoolMessageSchema, {
          kind: {
            case: "welcome",
            value: {
              heartbeatInterval: durationFromMs(heartbeatIntervalMs()),
              leaseDuration: durationFromMs(leaseDurationMs()),
              shard: this.shard(),
              shardCount: poolShardCount(),
            },
          },
        }),
      ),
    );
    // After a reconnect: keep the leases that are still this runner's, cancel the others.
    const now = Date.now();
    for (const leaseId of h.runningLeaseIds) {
      const kept = this.sql.exec(`UPDATE queue SET lease_expires = ? WHERE lease_id = ? AND runner = ? AND state = 'leased'`, now + leaseDurationMs(), leaseId, h.runnerId).rowsWritten;
      if (!kept) ws.send(toBinary(PoolMessageSchema, cancelMessage(leaseId, "the lease expired while the runner was away")));
    }
    await this.pump();
  }

  private goodbye(ws: WebSocket, code: Code, message: string) {
    try {
      ws.send(toBinary(PoolMessageSchema, create(PoolMessageSchema, { kind: { case: "goodbye", value: { code, message } } })));
      ws.close(1008, message.slice(0, 120));
    } catch {
      // the runner is gone already
    }
  }

  // ---- the watchdog ----------------------------------------------------------------------------

  async alarm(): Promise<void> {
    const now = Date.now();
    this.sql.exec(`DELETE FROM finished WHERE at < ?`, now - FINISHED_MEMORY_MS);
    for (const row of this.sql.exec<QueueRow>(`SELECT * FROM queue WHERE state = 'leased' AND lease_expires < ?`, now).toArray()) {
      // A runner still connected is told to stop, and its slot counts as free again (if it is
      // in fact still busy it refuses the next offer, saying how many slots it has).
      this.send(row.runner!, cancelMessage(row.lease_id!, "the lease expired: no heartbeat"));
      this.sql.exec(`UPDATE runners SET free = MIN(slots, free + 1) WHERE id = ?`, row.runner);
      this.leaseLost(row, `runner ${row.runner} stopped renewing its lease`);
    }
    this.failIfNoRunner(now);
    await this.flushOutbox();
    await this.pump();
  }

  private leaseLost(row: QueueRow, reason: string) {
    if (row.cancel_requested) return this.finish(row, cancelled("cancelled; the runner did not confirm"));
    if (row.attempt >= MAX_ATTEMPTS) {
      return this.finish(
        row,
        toBinary(
          ExecuteResponseSchema,
          create(ExecuteResponseSchema, {
            status: { code: Code.Unavailable, message: `the runner was lost ${row.attempt} times: ${reason}` },
            message: `Kiln could not finish this action: runners were lost ${row.attempt} times (last: ${reason}).`,
          }),
        ),
      );
    }
    this.sql.exec(
      `UPDATE queue SET state = 'queued', runner = NULL, lease_id = NULL, lease_expires = NULL, not_before = ? WHERE name = ?`,
      Date.now() + LOST_RETRY_MS,
      row.name,
    );
    this.outbox(row.name, { kind: "requeued", attempt: row.attempt, reason });
  }

  /**
   * Queued work waits for runners, but not forever: once no runner has been connected for
   * NO_RUNNER_TIMEOUT_SECONDS while work waited, it completes UNAVAILABLE. Work that the connected
   * runners cannot take (none offers its platform, or none serves its tenant) waits as long, in
   * case such a runner connects, then completes FAILED_PRECONDITION, as REAPI says of a platform
   * no worker can serve.
   */
  private failIfNoRunner(now: number) {
    const queued = this.sql.exec<QueueRow>(`SELECT * FROM queue WHERE state = 'queued'`).toArray();
    this.sql.exec(`DELETE FROM unmatched WHERE name NOT IN (SELECT name FROM queue WHERE state = 'queued')`);
    const since = this.sql.exec<{ v: string }>(`SELECT v FROM meta WHERE k = 'no_runner_since'`).toArray()[0];
    const runners = this.liveRunners();
    if (queued.length === 0 || runners.length > 0) {
      if (since) this.sql.exec(`DELETE FROM meta WHERE k = 'no_runner_since'`);
      return this.failUnmatched(queued, runners, now);
    }
    if (!since) return void this.sql.exec(`INSERT INTO meta (k, v) VALUES ('no_runner_since', ?)`, String(now));
    const waited = now - Number(since.v);
    if (waited < noRunnerTimeoutMs()) return;
    const reason = `no runner has been connected for ${Math.round(waited / 1000)} s`;
    for (const row of queued) {
      this.finish(row, notRun(Code.Unavailable, reason));
    }
  }

  private failUnmatched(queued: QueueRow[], runners: LiveRunner[], now: number) {
    for (const row of queued) {
      const platform = JSON.parse(row.platform) as [string, string][];
      const eligible = runners.filter((r) => r.tenant === null || r.tenant === row.tenant);
      if (eligible.some((r) => offers(r.properties, platform))) {
        this.sql.exec(`DELETE FROM unmatched WHERE name = ?`, row.name);
        continue;
      }
      this.sql.exec(`INSERT OR IGNORE INTO unmatched (name, since) VALUES (?, ?)`, row.name, now);
      const waited = now - this.sql.exec<{ since: number }>(`SELECT since FROM unmatched WHERE name = ?`, row.name).one().since;
      if (waited < noRunnerTimeoutMs()) continue;
      const offered = [...new Set(eligible.flatMap((r) => r.properties.map(([k, v]) => `${k}=${v}`)))];
      const reason =
        eligible.length === 0
          ? `no runner serving tenant "${row.tenant}" has been connected for ${Math.round(waited / 1000)} s`
          : `for ${Math.round(waited / 1000)} s no connected runner has offered the platform ${describePlatform(platform)}; runners offer: ${offered.join(", ") || "(nothing)"}`;
      this.finish(row, notRun(Code.FailedPrecondition, reason));
    }
  }

  /** Hands queued work to runners with free slots, best priority first. */
  private async pump(): Promise<void> {
    const now = Date.now();
    const runners = this.liveRunners();
    const free = new Map(this.sql.exec<{ id: string; free: number }>(`SELECT id, free FROM runners`).toArray().map((r) => [r.id, r.free]));
    const ready = this.sql.exec<QueueRow>(`SELECT * FROM queue WHERE state = 'queued' AND not_before <= ? ORDER BY priority, seq LIMIT 1000`, now).toArray();
    let waiting = false;
    for (const row of ready) {
      const platform = JSON.parse(row.platform) as [string, string][];
      const pick = runners
        .filter((r) => (free.get(r.id) ?? 0) > 0 && (r.tenant === null || r.tenant === row.tenant) && offers(r.properties, platform))
        .sort((x, y) => (free.get(y.id) ?? 0) / y.slots - (free.get(x.id) ?? 0) / x.slots)[0];
      if (!pick) {
        waiting = true;
        continue;
      }
      free.set(pick.id, (free.get(pick.id) ?? 0) - 1);
      this.sql.exec(`UPDATE runners SET free = free - 1 WHERE id = ?`, pick.id);
      await this.assign(row, pick);
    }
    if (waiting && runners.length === 0 && this.env.RUNNER) {
      const url = this.containerUrl();
      if (!url) console.error("could not start runner containers: PUBLIC_URL is unset and no Execute call has said where this worker is");
      else await wakeContainers(this.env, url).catch((e) => console.error("could not start runner containers", e));
    }
    await this.scheduleAlarm();
  }

  private async assign(row: QueueRow, runner: LiveRunner) {
    const { id: runnerId, ws } = runner;
    const leaseId = crypto.randomUUID();
    const attempt = row.attempt + 1;
    const now = Date.now();
    this.sql.exec(
      `UPDATE queue SET state = 'leased', runner = ?, lease_id = ?, attempt = ?, lease_expires = ? WHERE name = ?`,
      runnerId,
      leaseId,
      attempt,
      now + leaseDurationMs(),
      row.name,
    );
    const token = await mintToken(this.env, {
      kind: "lease",
      tenant: row.tenant,
      instanceName: row.instance_name,
      operation: row.name,
      leaseId,
      attempt,
      shard: this.shard(),
      runner: runnerId,
      credential: runner.credential,
      expires: now + row.timeout_ms + leaseDurationMs() + TOKEN_GRACE_MS,
    });
    const msg = create(PoolMessageSchema, {
      kind: {
        case: "assignment",
        value: {
          leaseId,
          operation: row.name,
          attempt,
          instanceName: row.instance_name,
          actionDigest: { hash: row.action_hash, sizeBytes: BigInt(row.action_size) },
          action: fromBinary(ActionSchema, new Uint8Array(row.action)),
          command: fromBinary(CommandSchema, new Uint8Array(row.command)),
          timeout: durationFromMs(row.timeout_ms),
          token,
          queuedTime: timestampFromMs(row.queued_at),
          stdoutStreamName: logStreamName(row.instance_name, row.name, attempt, "stdout"),
          stderrStreamName: logStreamName(row.instance_name, row.name, attempt, "stderr"),
        },
      },
    });
    try {
      ws.send(toBinary(PoolMessageSchema, msg));
    } catch {
      // The socket died between listing and sending: the lease expires and the work is offered again.
    }
  }

  // ---- state helpers ---------------------------------------------------------------------------

  private row(name: string): QueueRow | undefined {
    return this.sql.exec<QueueRow>(`SELECT * FROM queue WHERE name = ?`, name).toArray()[0];
  }

  private insert(e: PoolEntry) {
    const seq = this.sql.exec<{ n: number }>(`SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM queue`).one().n;
    this.sql.exec(
      `INSERT INTO queue (name, tenant, instance_name, action_hash, action_size, priority, seq, dedup_key, platform,
        timeout_ms, queued_at, action, command, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')`,
      e.name,
      e.tenant,
      e.instanceName,
      e.actionDigest.hash,
      e.actionDigest.size,
      e.priority,
      seq,
      e.dedupKey,
      JSON.stringify(e.platform),
      e.timeoutMs,
      e.queuedAt,
      e.action,
      e.command,
    );
  }

  /** The operation leaves the queue and its completion goes into the outbox, in one step. */
  private finish(row: QueueRow, response: Uint8Array) {
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(`DELETE FROM queue WHERE name = ?`, row.name);
      this.outbox(row.name, { kind: "completed", response });
      this.sql.exec(`INSERT OR REPLACE INTO finished (name, at) VALUES (?, ?)`, row.name, Date.now());
    });
  }

  private outbox(name: string, ev: OperationEvent) {
    const { response, ...rest } = ev as OperationEvent & { response?: Uint8Array };
    if (!response || response.byteLength <= PART_BYTES) {
      this.sql.exec(`INSERT INTO outbox (name, event, response) VALUES (?, ?, ?)`, name, JSON.stringify(rest), response ?? null);
      return;
    }
    const parts = partsOf(response);
    const id = this.sql.exec<{ id: number }>(`INSERT INTO outbox (name, event) VALUES (?, ?) RETURNING id`, name, JSON.stringify({ ...rest, parts: parts.length })).one().id;
    parts.forEach((data, seq) => this.sql.exec(`INSERT INTO outbox_parts (outbox_id, seq, data) VALUES (?, ?, ?)`, id, seq, data));
  }

  /** An outbox row's event, its response joined from its parts if it has them. */
  private eventOf(r: { id: number; event: string; response: ArrayBuffer | null }): OperationEvent {
    const { parts, ...ev } = JSON.parse(r.event) as OperationEvent & { parts?: number };
    if (r.response) return { ...ev, response: new Uint8Array(r.response) } as OperationEvent;
    if (!parts) return ev as OperationEvent;
    const rows = this.sql.exec<{ data: ArrayBuffer }>(`SELECT data FROM outbox_parts WHERE outbox_id = ? ORDER BY seq`, r.id).toArray();
    return { ...ev, response: concatBytes(rows.map((p) => new Uint8Array(p.data))) } as OperationEvent;
  }

  private dropOutboxRow(id: number) {
    this.sql.exec(`DELETE FROM outbox_parts WHERE outbox_id = ?`, id);
    this.sql.exec(`DELETE FROM outbox WHERE id = ?`, id);
  }

  /** Delivers pending events, oldest first; an operation's later events wait for its earlier ones. */
  private async flushOutbox(): Promise<void> {
    const now = Date.now();
    const rows = this.sql
      .exec<{ id: number; name: string; event: string; response: ArrayBuffer | null; tries: number; next_at: number }>(`SELECT * FROM outbox ORDER BY id LIMIT 200`)
      .toArray();
    const byName = new Map<string, typeof rows>();
    for (const r of rows) byName.set(r.name, [...(byName.get(r.name) ?? []), r]);
    // Operations with a response in parts (up to 16 MiB each, whole in memory while sent) are
    // delivered one at a time, after the others together: a backlog of them must not fill memory.
    const large = [...byName].filter(([, events]) => events.some((r) => r.response === null && r.event.includes('"parts":')));
    const deliver = async ([name, events]: [string, typeof rows]) => {
      for (const r of events) {
        if (r.next_at > now) return;
        const ev = this.eventOf(r);
        try {
          faultPoint("pool.deliver");
          const exists = await storedOperationStub(this.env, name).event(ev);
          this.dropOutboxRow(r.id);
          if (!exists) return void (await this.forget(name));
        } catch (e) {
          console.warn("operation event not delivered; will retry", name, ev.kind, String(e));
          this.sql.exec(`UPDATE outbox SET tries = tries + 1, next_at = ? WHERE id = ?`, now + Math.min(500 * 2 ** r.tries, 60_000), r.id);
          return;
        }
      }
    };
    await Promise.all([...byName].filter((e) => !large.includes(e)).map(deliver));
    for (const e of large) await deliver(e);
  }

  private async scheduleAlarm() {
    const now = Date.now();
    const next = this.sql
      .exec<{ t: number | null }>(
        `SELECT MIN(t) AS t FROM (
          SELECT MIN(lease_expires) AS t FROM queue WHERE state = 'leased'
          UNION ALL SELECT MIN(next_at) FROM outbox
          UNION ALL SELECT MIN(MAX(not_before, ?), ?) FROM queue WHERE state = 'queued')`,
        now,
        now + WATCHDOG_MS,
      )
      .one().t;
    if (next === null) return;
    const current = await this.ctx.storage.getAlarm();
    const at = Math.max(next, now + 50);
    if (current === null || current > at) await this.ctx.storage.setAlarm(at);
  }

  private shard(): number {
    const n = Number(this.sql.exec<{ v: string }>(`SELECT v FROM meta WHERE k = 'shard'`).toArray()[0]?.v ?? NaN);
    return Number.isInteger(n) ? n : 0;
  }

  /** Records which shard this object is (it cannot read its own name); every caller says. */
  private setShard(shard: number): void {
    if (Number.isInteger(shard) && shard !== this.shard()) this.sql.exec(`INSERT OR REPLACE INTO meta (k, v) VALUES ('shard', ?)`, String(shard));
  }

  /** Connected runners that have said Hello, one entry per runner (its newest connection). */
  private liveRunners(): LiveRunner[] {
    const byId = new Map<string, LiveRunner>();
    for (const ws of this.ctx.getWebSockets()) {
      const a = ws.deserializeAttachment() as Attachment | null;
      if (!a?.runnerId || ws.readyState !== WebSocket.OPEN) continue;
      byId.set(a.runnerId, { id: a.runnerId, ws, credential: a.credential, tenant: a.tenant, slots: a.slots ?? 1, properties: a.properties ?? [] });
    }
    return [...byId.values()];
  }

  private send(runnerId: string, msg: PoolMessage) {
    const r = this.liveRunners().find((x) => x.id === runnerId);
    try {
      r?.ws.send(toBinary(PoolMessageSchema, msg));
    } catch {
      // gone; its leases expire
    }
  }

  /** For /metrics: counts only, whatever the queue's length. */
  stats(): PoolStats {
    const q = this.sql
      .exec<{ queued: number; running: number }>(`SELECT COALESCE(SUM(state = 'queued'), 0) AS queued, COALESCE(SUM(state = 'leased'), 0) AS running FROM queue`)
      .one();
    const live = this.liveRunners();
    const outbox = this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM outbox`).one().n;
    return { ...q, runners: live.length, slots: live.reduce((n, r) => n + r.slots, 0), outbox };
  }

  /** For tests and the UI. */
  snapshot(): PoolSnapshot {
    const live = new Map<string, number>();
    for (const ws of this.ctx.getWebSockets()) {
      const id = (ws.deserializeAttachment() as Attachment | null)?.runnerId;
      if (id) live.set(id, (live.get(id) ?? 0) + 1);
    }
    return {
      queue: this.sql
        .exec<{ name: string; state: string; priority: number; runner: string | null; attempt: number }>(`SELECT name, state, priority, runner, attempt FROM queue ORDER BY priority, seq`)
        .toArray(),
      runners: this.sql.exec<{ id: string; free: number; slots: number }>(`SELECT * FROM runners`).toArray().map((r) => ({ ...r, connections: live.get(r.id) ?? 0 })),
      outbox: this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM outbox`).one().n,
    };
  }
}

/** The response of an action that never ran: `code` and `reason`, which clients show as the message. */
const notRun = (code: Code, reason: string) =>
  toBinary(ExecuteResponseSchema, create(ExecuteResponseSchema, { status: { code, message: reason }, message: `Kiln could not run this action: ${reason}.` }));

const cancelled = (message: string) =>
  toBinary(ExecuteResponseSchema, create(ExecuteResponseSchema, { status: create(StatusSchema, { code: Code.Canceled, message }) }));

const cancelMessage = (leaseId: string, reason: string) => create(PoolMessageSchema, { kind: { case: "cancel", value: { leaseId, reason } } });
