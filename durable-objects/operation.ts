// OperationDO: one execution operation as clients see it. It holds the stage machine (QUEUED,
// EXECUTING, COMPLETED), streams every change to all its waiters, keeps the live output of the
// current attempt, writes the action cache on success, and removes itself once the retention time
// after completion has passed. The queue and the runners belong to the pool (RunnerPoolDO); the
// pool tells this object what happened through `event`, retried until delivered, and this
// object's alarm asks the pool about itself while unfinished, so neither side can lose the other.
// The D1 listing (ListOperations) is written from the alarm, off the path of every change.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { DurableObject } from "cloudflare:workers";
import {
  DigestFunction_Value,
  ExecuteOperationMetadataSchema,
  ExecuteResponseSchema,
  ExecutionStage_Value,
} from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { OperationSchema } from "../src/gen/google/longrunning/operations_pb.ts";
import type { Env } from "../src/env.ts";
import { reconcileIntervalMs, retentionMs } from "../src/config.ts";
import { encodeFrame } from "../src/execution/frames.ts";
import { faultPoint } from "../src/execution/faults.ts";
import { LIVE_LOG_MAX_BYTES, logStreamName, type LogKind } from "../src/execution/log-streams.ts";
import { poolStub, type OperationEvent, type PoolEntry } from "../src/execution/pool.ts";
import { partsOf } from "../src/execution/stored-parts.ts";
import { concatBytes } from "../src/shared/concat-bytes.ts";
import { actionResultKey, putActionResult } from "../src/storage/action-store.ts";
import { indexOperation, unindexOperation } from "../src/storage/operation-index.ts";
import { logDeadLetter, neverFits, retryDelayMs } from "../src/storage/index-retry.ts";
import { tally } from "../src/metrics/request-tally.ts";

export interface OperationInit {
  /** `operations/{uuid}`. */
  name: string;
  tenant: string;
  instanceName: string;
  actionDigest: { hash: string; size: number };
  doNotCache: boolean;
  timeoutMs: number;
  priority: number;
  shard: number;
  /** RequestMetadata.tool_invocation_id of the Execute that made it (the build's invocation). */
  toolInvocationId?: string;
}

interface LogState {
  size: number;
  finished: boolean;
}

interface OperationState extends OperationInit {
  stage: ExecutionStage_Value;
  done: boolean;
  /** In memory only: stored apart, in RESPONSE_PART keys (stored-parts.ts), `responseParts` of them. */
  response?: Uint8Array;
  responseParts?: number;
  createdAt: number;
  updatedAt: number;
  completedAt?: number;
  /** The attempt the pool last reported (0: never started). */
  attempt: number;
  runner?: string;
  cancelRequested: boolean;
  /** DeleteOperation while running: the run finishes (its runner slot must be freed), then it is gone. */
  deleted?: boolean;
  /** The D1 listing lags this state. */
  indexDirty: boolean;
  /** Failed D1 listing writes in a row: the next retry backs off (storage/index-retry.ts). */
  indexFailures?: number;
  /** When the pool last told or answered this object something. */
  poolContactAt: number;
  logs: Record<LogKind, LogState>;
}

const STATE = "state";
const ENTRY = "entry";
const RESPONSE_PART = (i: number) => `response:${i}`;
/** The D1 listing is written at most this long after a change, batched. */
const INDEX_DELAY_MS = 250;
const LOG_CHUNK = 64 * 1024;
/** Chunks a live-log reader takes per pull (4 MiB): a reader far behind never lists the whole log at once. */
const LOG_READ_CHUNKS = 64;
const emptyLogs = (): Record<LogKind, LogState> => ({ stdout: { size: 0, finished: false }, stderr: { size: 0, finished: false } });
const logKey = (kind: LogKind, offset: number) => `log:${kind}:${String(offset).padStart(12, "0")}`;

export class OperationDO extends DurableObject<Env> {
  private state: OperationState | undefined;
  private readonly waiters = new Set<WritableStreamDefaultWriter<Uint8Array>>();
  /** Live log readers, woken on every append or end. */
  private readonly logWaiters = new Set<() => void>();

  private async load(): Promise<OperationState | undefined> {
    if (this.state) return this.state;
    const s = await this.ctx.storage.get<OperationState>(STATE);
    if (s?.responseParts && !s.response) {
      const keys = Array.from({ length: s.responseParts }, (_, i) => RESPONSE_PART(i));
      const parts = await this.ctx.storage.get<Uint8Array>(keys);
      s.response = concatBytes(keys.map((k) => parts.get(k)!));
    }
    this.state = s;
    return s;
  }

  /** The live (not deleted) operation, as clients may see it. */
  private async visible(): Promise<OperationState | undefined> {
    const s = await this.load();
    return s && !s.deleted ? s : undefined;
  }

  /** Who owns the operation, for authorization; null if it does not exist. */
  async owner(): Promise<{ tenant: string; instanceName: string } | null> {
    const s = await this.visible();
    return s ? { tenant: s.tenant, instanceName: s.instanceName } : null;
  }

  private async save(s: OperationState) {
    s.updatedAt = Date.now();
    s.indexDirty = true;
    this.state = s;
    await this.ctx.storage.put(STATE, await this.storedState(s));
    await this.scheduleAlarm(s);
  }

  /**
   * The state as stored: without its response, which (set once, when the operation is done) is
   * stored apart, in parts, the first time it is seen here, so the state entry stays small however
   * large the result (stored-parts.ts). Every write of STATE goes through this.
   */
  private async storedState(s: OperationState): Promise<Omit<OperationState, "response">> {
    const { response, ...stored } = s;
    if (response && s.responseParts === undefined) {
      const parts = partsOf(response);
      await this.ctx.storage.put(Object.fromEntries(parts.map((p, i) => [RESPONSE_PART(i), p])));
      stored.responseParts = s.responseParts = parts.length;
    }
    return stored;
  }

  /** Creates the operation, queued. Idempotent for the same name. */
  async init(init: OperationInit, entry: PoolEntry): Promise<void> {
    faultPoint("operation.init");
    if (await this.load()) return;
    const now = Date.now();
    await this.ctx.storage.put(ENTRY, entry);
    await this.save({
      ...init,
      stage: ExecutionStage_Value.QUEUED,
      done: false,
      createdAt: now,
      updatedAt: now,
      attempt: 0,
      cancelRequested: false,
      indexDirty: true,
      poolContactAt: now,
      logs: emptyLogs(),
    });
  }

  /** An operation answered from the action cache: created finished, kept for the retention time. */
  async initDone(init: OperationInit, response: Uint8Array): Promise<void> {
    if (await this.load()) return;
    const now = Date.now();
    await this.save({
      ...init,
      stage: ExecutionStage_Value.COMPLETED,
      done: true,
      response,
      createdAt: now,
      updatedAt: now,
      completedAt: now,
      attempt: 0,
      cancelRequested: false,
      indexDirty: true,
      poolContactAt: now,
      logs: emptyLogs(),
    });
  }

  /** The current Operation, serialized; null if it does not exist (never created, or expired). */
  async operation(): Promise<Uint8Array | null> {
    const s = await this.visible();
    return s ? toBinary(OperationSchema, this.toOperation(s)) : null;
  }

  /** A stream of framed Operations: the current one at once, then every change until done. */
  async watch(): Promise<ReadableStream<Uint8Array> | null> {
    const s = await this.visible();
    if (!s) return null;
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const writer = writable.getWriter();
    void writer.write(encodeFrame(toBinary(OperationSchema, this.toOperation(s)))).catch(() => {});
    if (s.done) void writer.close().catch(() => {});
    else this.waiters.add(writer);
    return readable;
  }

  /**
   * What the pool reports. Events of an older attempt than the last one seen are ignored.
   * Returns whether the operation still exists (the pool drops work nobody can see).
   */
  async event(ev: OperationEvent): Promise<boolean> {
    faultPoint("operation.event");
    const s = await this.load();
    if (!s) return false;
    if (s.done) return true;
    s.poolContactAt = Date.now();
    if (ev.kind === "completed") return (await this.complete(s, ev.response), true);
    if (ev.attempt < s.attempt) return true;
    this.newAttempt(s, ev.attempt);
    if (ev.kind === "started") {
      s.stage = ExecutionStage_Value.EXECUTING;
      s.runner = ev.runner;
    } else {
      s.stage = ExecutionStage_Value.QUEUED;
      s.runner = undefined;
      for (const l of Object.values(s.logs)) l.finished = true;
      this.wakeLogReaders();
    }
    await this.save(s);
    this.broadcast(s);
    return true;
  }

  /** DeleteOperation: the client is no longer interested. It does not cancel a running action. */
  async delete(): Promise<void> {
    const s = await this.load();
    if (!s) return;
    if (s.done) return this.expire(s);
    s.deleted = true;
    await this.save(s);
    for (const w of this.waiters) void w.abort("operation deleted").catch(() => {});
    this.waiters.clear();
  }

  /** CancelOperation: the pool drops a queued action or cancels it on its runner. */
  async cancel(): Promise<boolean> {
    const s = await this.visible();
    if (!s) return false;
    if (s.done) return true;
    s.cancelRequested = true;
    await this.save(s);
    await poolStub(this.env, s.shard).cancel(s.name);
    return true;
  }

  async alarm(): Promise<void> {
    const s = await this.load();
    if (!s) return;
    const now = Date.now();
    if (s.indexDirty) {
      try {
        if (s.deleted && s.done) await unindexOperation(this.env, s.name);
        else await indexOperation(this.env, s);
        s.indexDirty = false;
        if (s.indexFailures) tally("kiln_index_retry_cleared_total", { index: "operations" });
        s.indexFailures = 0;
        await this.ctx.storage.put(STATE, await this.storedState(s));
      } catch (e) {
        if (neverFits(e)) {
          // It would fail the same way forever: logged and given up, not retried every few seconds.
          logDeadLetter("operations", { tenant: s.tenant, name: s.name, reason: String(e) });
          s.indexDirty = false;
          if (s.indexFailures) tally("kiln_index_retry_cleared_total", { index: "operations" });
          s.indexFailures = 0;
        } else {
          if (!s.indexFailures) tally("kiln_index_retry_entered_total", { index: "operations" });
          s.indexFailures = (s.indexFailures ?? 0) + 1;
          console.warn(`operation index write failed (${s.indexFailures} in a row); will retry`, s.name, String(e));
          tally("kiln_index_write_failures_total", { index: "operations" });
        }
        await this.ctx.storage.put(STATE, await this.storedState(s));
      }
    }
    if (s.done) {
      if (now >= (s.completedAt ?? 0) + retentionMs()) return this.expire(s);
    } else if (now - s.poolContactAt >= reconcileIntervalMs()) {
      await this.reconcile(s);
    }
    await this.scheduleAlarm(s, s.indexDirty ? now + retryDelayMs(s.indexFailures ?? 0) : undefined);
  }

  /** The watchdog's operation side: make sure the pool still knows this operation. */
  private async reconcile(s: OperationState) {
    const entry = await this.ctx.storage.get<PoolEntry>(ENTRY);
    if (!entry) return;
    try {
      faultPoint("operation.reconcile");
      const seen = await poolStub(this.env, s.shard).ensure(entry);
      if (seen === "requeued") console.warn("the pool had lost this operation; queued it again", s.name);
      s.poolContactAt = Date.now();
      await this.ctx.storage.put(STATE, await this.storedState(s));
    } catch (e) {
      console.warn("pool did not answer the reconcile; will retry", s.name, String(e));
    }
  }

  private async scheduleAlarm(s: OperationState, retryAt?: number) {
    const now = Date.now();
    const times = [
      s.indexDirty ? (retryAt ?? now + INDEX_DELAY_MS) : Infinity,
      s.done ? (s.completedAt ?? now) + retentionMs() : s.poolContactAt + reconcileIntervalMs(),
    ];
    const at = Math.max(now + 10, Math.min(...times));
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at || current < now) await this.ctx.storage.setAlarm(at);
  }

  private async complete(s: OperationState, responseBytes: Uint8Array) {
    const res = fromBinary(ExecuteResponseSchema, responseBytes);
    const ok = (res.status?.code ?? 0) === 0;
    if (ok && res.result && res.result.exitCode === 0 && !s.doNotCache && !res.cachedResult) {
      // RunnerService.Complete made the check UpdateActionResult makes: every blob it names exists.
      try {
        const writer = `execution ${s.name} on ${res.result.executionMetadata?.worker || "a runner"}`;
        await putActionResult(this.env.CAS, actionResultKey(s.tenant, s.instanceName, s.actionDigest.hash), res.result, s.actionDigest.size, writer);
      } catch (e) {
        res.message = `${res.message ? res.message + "\n" : ""}The result was not cached: ${String((e as Error)?.message ?? e)}`;
      }
    }
    s.stage = ExecutionStage_Value.COMPLETED;
    s.done = true;
    s.response = toBinary(ExecuteResponseSchema, res);
    s.completedAt = Date.now();
    for (const l of Object.values(s.logs)) l.finished = true;
    await this.ctx.storage.delete(ENTRY);
    await this.save(s);
    this.broadcast(s);
    this.wakeLogReaders();
    for (const w of this.waiters) void w.close().catch(() => {});
    this.waiters.clear();
    if (s.deleted) await this.expire(s);
  }

  /** DeleteOperation, or retention over: the operation is gone; waiters see NOT_FOUND next. */
  async expire(s?: OperationState): Promise<void> {
    const state = s ?? (await this.load());
    for (const w of this.waiters) void w.abort("operation deleted").catch(() => {});
    this.waiters.clear();
    this.wakeLogReaders();
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.state = undefined;
    // If D1 is down the row stays listed; ListOperations skips operations that no longer exist.
    if (state) await unindexOperation(this.env, state.name).catch(() => {});
  }

  // ---- live output -------------------------------------------------------------------------

  /** A new attempt starts with empty streams (the old attempt's are dropped). */
  private newAttempt(s: OperationState, attempt: number) {
    if (attempt <= s.attempt) return;
    s.attempt = attempt;
    s.logs = emptyLogs();
    this.wakeLogReaders();
    void this.ctx.storage.list({ prefix: "log:" }).then((m) => this.ctx.storage.delete([...m.keys()]));
  }

  /**
   * Appends live output of `attempt` at `offset`. A repeated append is applied once; a gap is
   * refused by answering the size held, from which the runner resends. Returns the size held.
   */
  async appendLog(attempt: number, kind: LogKind, offset: number, data: Uint8Array, finished: boolean): Promise<number> {
    const s = await this.load();
    if (!s || s.done || attempt < s.attempt) return offset + data.byteLength; // superseded: drop quietly
    if (attempt > s.attempt) {
      this.newAttempt(s, attempt);
      await this.ctx.storage.put(STATE, await this.storedState(s));
    }
    const log = s.logs[kind];
    if (offset > log.size || log.finished) return log.size;
    let bytes = data.subarray(log.size - offset);
    bytes = bytes.subarray(0, Math.max(0, LIVE_LOG_MAX_BYTES - log.size));
    const puts: Record<string, Uint8Array> = {};
    for (let i = 0; i < bytes.byteLength; i += LOG_CHUNK) puts[logKey(kind, log.size + i)] = bytes.slice(i, i + LOG_CHUNK);
    log.size += bytes.byteLength;
    if (finished) log.finished = true;
    await this.ctx.storage.put({ ...puts, [STATE]: await this.storedState(s) });
    this.wakeLogReaders();
    return finished ? offset + data.byteLength : log.size;
  }

  /** A live log as a byte stream from `offset`: what is held now, then appends, until it ends. */
  async readLog(attempt: number, kind: LogKind, offset: number): Promise<ReadableStream<Uint8Array> | null> {
    const s = await this.visible();
    if (!s || attempt !== s.attempt) return null;
    let pos = offset;
    const wait = () => new Promise<void>((resolve) => this.logWaiters.add(resolve));
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        for (;;) {
          const now = this.state;
          if (!now || now.attempt !== attempt) return controller.close();
          // Appends cut chunks from wherever the log ended, so the chunk holding `pos` is the last
          // one starting at or before it; from there on, a bounded batch per pull.
          const prefix = `log:${kind}:`;
          const holding = await this.ctx.storage.list<Uint8Array>({ prefix, end: logKey(kind, pos + 1), reverse: true, limit: 1 });
          const start = holding.keys().next().value ?? logKey(kind, pos);
          const chunks = await this.ctx.storage.list<Uint8Array>({ prefix, start, limit: LOG_READ_CHUNKS });
          let sent = false;
          for (const [key, chunk] of chunks) {
            const at = Number(key.slice(key.lastIndexOf(":") + 1));
            if (at + chunk.byteLength <= pos) continue;
            controller.enqueue(chunk.subarray(pos - at));
            pos = at + chunk.byteLength;
            sent = true;
          }
          if (sent) return;
          if (now.logs[kind].finished || now.done) return controller.close();
          await wait();
        }
      },
    });
  }

  private wakeLogReaders() {
    for (const wake of this.logWaiters) wake();
    this.logWaiters.clear();
  }

  // ---- the Operation message ----------------------------------------------------------------

  private broadcast(s: OperationState) {
    const frame = encodeFrame(toBinary(OperationSchema, this.toOperation(s)));
    for (const w of this.waiters) {
      // Not awaited: a slow waiter must not hold up the others.
      w.write(frame).catch(() => this.waiters.delete(w));
    }
  }

  private toOperation(s: OperationState) {
    const live = s.attempt > 0 && !s.done;
    const metadata = create(ExecuteOperationMetadataSchema, {
      stage: s.stage,
      actionDigest: { hash: s.actionDigest.hash, sizeBytes: BigInt(s.actionDigest.size) },
      digestFunction: DigestFunction_Value.SHA256,
      stdoutStreamName: live ? logStreamName(s.instanceName, s.name, s.attempt, "stdout") : "",
      stderrStreamName: live ? logStreamName(s.instanceName, s.name, s.attempt, "stderr") : "",
    });
    const op = create(OperationSchema, { name: s.name, done: s.done, metadata: anyPack(ExecuteOperationMetadataSchema, metadata) });
    if (s.done && s.response) {
      op.result = { case: "response", value: anyPack(ExecuteResponseSchema, fromBinary(ExecuteResponseSchema, s.response)) };
    }
    return op;
  }
}

