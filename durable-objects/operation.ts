// OperationDO: one execution operation. It holds the stage machine (QUEUED, EXECUTING, COMPLETED),
// streams every change to all its waiters, runs the action on the runner the scheduler chose
// (from its alarm, so the run does not depend on any client staying connected), writes the action
// cache on success, and removes itself once the retention time after completion has passed.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { DurableObject } from "cloudflare:workers";
import {
  ExecuteOperationMetadataSchema,
  ExecuteResponseSchema,
  ExecutionStage_Value,
  DigestFunction_Value,
} from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { OperationSchema } from "../src/gen/google/longrunning/operations_pb.ts";
import { Code } from "@connectrpc/connect";
import type { Env } from "../src/env.ts";
import { encodeFrame } from "../src/execution/frames.ts";
import { runOnRunner, cancelOnRunner, type RunnerRef } from "../src/execution/runners.ts";
import { actionResultKey, putActionResult } from "../src/storage/action-store.ts";
import { indexOperation, unindexOperation } from "../src/storage/operation-index.ts";
import { retentionMs } from "../src/config.ts";

/** A runner lost this many times fails the operation with UNAVAILABLE. */
export const MAX_ATTEMPTS = 3;

export interface OperationInit {
  /** `operations/{uuid}`. */
  name: string;
  tenant: string;
  instanceName: string;
  actionDigest: { hash: string; size: number };
  doNotCache: boolean;
  timeoutMs: number;
  priority: number;
  /** Name of the SchedulerDO that queues this operation. */
  scheduler: string;
  /** Credentials the runner uses to reach the CAS on the caller's behalf. */
  authorization: string | null;
}

interface OperationState extends OperationInit {
  stage: ExecutionStage_Value;
  done: boolean;
  response?: Uint8Array;
  createdAt: number;
  updatedAt: number;
  completedAt?: number;
  runner?: RunnerRef;
  attempts: number;
  cancelRequested: boolean;
  /** DeleteOperation while running: the run finishes (its runner slot must be freed), then it is gone. */
  deleted?: boolean;
}

const STATE = "state";

export class OperationDO extends DurableObject<Env> {
  private state: OperationState | undefined;
  private readonly waiters = new Set<WritableStreamDefaultWriter<Uint8Array>>();

  private async load(): Promise<OperationState | undefined> {
    this.state ??= await this.ctx.storage.get<OperationState>(STATE);
    return this.state;
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

  private async save(s: OperationState) {
    s.updatedAt = Date.now();
    this.state = s;
    await this.ctx.storage.put(STATE, s);
    await indexOperation(this.env, s).catch((e) => console.error("operation index write failed", s.name, e));
  }

  /** Creates the operation, queued. Idempotent for the same name. */
  async init(init: OperationInit): Promise<void> {
    if (await this.load()) return;
    const now = Date.now();
    await this.save({ ...init, stage: ExecutionStage_Value.QUEUED, done: false, createdAt: now, updatedAt: now, attempts: 0, cancelRequested: false });
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

  /** The scheduler assigned a runner: run from the alarm, now. */
  async dispatch(runner: RunnerRef): Promise<void> {
    const s = await this.load();
    if (!s || s.done) return;
    s.runner = runner;
    await this.save(s);
    await this.ctx.storage.setAlarm(Date.now());
  }

  /** Back to the queue (the runner was busy or lost). */
  async requeued(): Promise<void> {
    const s = await this.load();
    if (!s || s.done) return;
    s.runner = undefined;
    s.stage = ExecutionStage_Value.QUEUED;
    await this.save(s);
    this.broadcast(s);
  }

  /** CancelOperation: kills a running action; a queued one completes at once. */
  async cancel(): Promise<boolean> {
    const s = await this.visible();
    if (!s) return false;
    if (s.done) return true;
    s.cancelRequested = true;
    await this.save(s);
    if (s.runner && s.stage === ExecutionStage_Value.EXECUTING) {
      await cancelOnRunner(this.env, s.runner, s.name).catch((e) => console.error("cancel on runner failed", e));
    } else {
      await this.scheduler(s).remove(s.name);
      await this.complete(s, { status: { code: Code.Canceled, message: "cancelled before it started" } });
    }
    return true;
  }

  /** The scheduler gave up while this waited in the queue: no runner was reachable for too long. */
  async unavailable(reason: string): Promise<void> {
    const s = await this.load();
    if (!s || s.done || s.runner) return;
    await this.complete(s, { status: { code: Code.Unavailable, message: reason }, message: `Kiln could not run this action: ${reason}.` });
  }

  async alarm(): Promise<void> {
    const s = await this.load();
    if (!s) return;
    if (s.done) {
      if (Date.now() >= (s.completedAt ?? 0) + retentionMs()) await this.expire(s);
      else await this.ctx.storage.setAlarm((s.completedAt ?? 0) + retentionMs());
      return;
    }
    if (!s.runner) return;
    if (s.cancelRequested) {
      await this.complete(s, { status: { code: Code.Canceled, message: "cancelled" } });
      return;
    }
    s.attempts += 1;
    s.stage = ExecutionStage_Value.EXECUTING;
    await this.save(s);
    this.broadcast(s);
    const outcome = await runOnRunner(this.env, s.runner, {
      operation: s.name,
      instanceName: s.instanceName,
      actionDigest: s.actionDigest,
      authorization: s.authorization,
      timeoutMs: s.timeoutMs,
      queuedAtMs: s.createdAt,
    });
    const now = await this.load();
    if (!now || now.done) return;
    switch (outcome.kind) {
      case "busy":
        // A refusal at capacity is not a lost runner: it must not count towards MAX_ATTEMPTS.
        now.attempts -= 1;
        await this.requeued();
        await this.scheduler(now).requeue(now.name, outcome.runner, false);
        return;
      case "lost":
        if (now.cancelRequested) {
          await this.complete(now, { status: { code: Code.Canceled, message: "cancelled" } });
        } else if (now.attempts >= MAX_ATTEMPTS) {
          await this.complete(now, {
            status: { code: Code.Unavailable, message: `the runner was lost ${now.attempts} times: ${outcome.reason}` },
            message: `Kiln could not finish this action: runners were lost ${now.attempts} times (last: ${outcome.reason}).`,
          });
        } else {
          await this.requeued();
          await this.scheduler(now).requeue(now.name, outcome.runner, true);
        }
        return;
      case "done":
        await this.complete(now, outcome.response);
    }
  }

  private scheduler(s: OperationState) {
    return this.env.SCHEDULER.get(this.env.SCHEDULER.idFromName(s.scheduler));
  }

  private async complete(s: OperationState, response: MessageInitShape<typeof ExecuteResponseSchema>) {
    const res = create(ExecuteResponseSchema, response);
    const ok = (res.status?.code ?? 0) === 0;
    if (ok && res.result && res.result.exitCode === 0 && !s.doNotCache && !res.cachedResult) {
      try {
        await putActionResult(this.env.CAS, actionResultKey(s.tenant, s.instanceName, s.actionDigest.hash), res.result);
      } catch (e) {
        res.message = `${res.message ? res.message + "\n" : ""}The result was not cached: ${String(e)}`;
      }
    }
    s.stage = ExecutionStage_Value.COMPLETED;
    s.done = true;
    s.response = toBinary(ExecuteResponseSchema, res);
    s.completedAt = Date.now();
    await this.save(s);
    this.broadcast(s);
    for (const w of this.waiters) void w.close().catch(() => {});
    this.waiters.clear();
    await this.scheduler(s).finished(s.name).catch((e) => console.error("scheduler finished failed", e));
    if (s.deleted) await this.expire(s);
    else await this.ctx.storage.setAlarm(s.completedAt + retentionMs());
  }

  /** DeleteOperation, or retention over: the operation is gone; waiters see NOT_FOUND next. */
  async expire(s?: OperationState): Promise<void> {
    const state = s ?? (await this.load());
    for (const w of this.waiters) void w.abort("operation deleted").catch(() => {});
    this.waiters.clear();
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.state = undefined;
    if (state) await unindexOperation(this.env, state.name).catch(() => {});
  }

  private broadcast(s: OperationState) {
    const frame = encodeFrame(toBinary(OperationSchema, this.toOperation(s)));
    for (const w of this.waiters) {
      // Not awaited: a slow waiter must not hold up the others.
      w.write(frame).catch(() => this.waiters.delete(w));
    }
  }

  private toOperation(s: OperationState) {
    const metadata = create(ExecuteOperationMetadataSchema, {
      stage: s.stage,
      actionDigest: { hash: s.actionDigest.hash, sizeBytes: BigInt(s.actionDigest.size) },
      digestFunction: DigestFunction_Value.SHA256,
    });
    const op = create(OperationSchema, { name: s.name, done: s.done, metadata: anyPack(ExecuteOperationMetadataSchema, metadata) });
    if (s.done && s.response) {
      op.result = { case: "response", value: anyPack(ExecuteResponseSchema, fromBinary(ExecuteResponseSchema, s.response)) };
    }
    return op;
  }
}

