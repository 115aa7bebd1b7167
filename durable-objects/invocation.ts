// InvocationDO: one ResultStore invocation (per tenant) and all its children — targets,
// configured targets, actions, configurations, file sets — in this object's SQLite. Every upload
// rule that needs the invocation's state (request ids, the authorization token, resume tokens,
// finalization, auto-finalize) is decided here, inside one single-threaded object and one storage
// transaction per call, so two uploads racing on one invocation cannot both win and a refused
// UploadBatch leaves nothing behind.
import { DurableObject } from "cloudflare:workers";
import { read, type ReadQuery, type ReadResult } from "../src/resultstore/read-store.ts";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "../src/errors.ts";
import type { Env } from "../src/env.ts";
import { UploadStatus } from "../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { ResultStoreUpload } from "../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { IndexSync } from "../src/resultstore/index-sync.ts";
import { keyOf, nameOf } from "../src/resultstore/names.ts";
import { ResourceTable } from "../src/resultstore/resource-table.ts";
import { runUpload, type CallInfo, type UploadMethod } from "../src/resultstore/upload-rpc.ts";
import { META, setUploadStatus, Uploader } from "../src/resultstore/uploader.ts";
import { failureOf, type InvocationResult } from "../src/resultstore/invocation-rpc.ts";
import { ingestBuildEvents, type IngestCall } from "../src/bes/ingest.ts";
import { IngestBuildToolEventsRequestSchema, IngestBuildToolEventsResponseSchema } from "../src/gen/kiln/bes/v1/ingest_pb.ts";
import { listRemoteActions, recordRemoteCall, REMOTE_ACTIONS_SCHEMA, type RemoteCall } from "../src/resultstore/remote-actions.ts";

/** The schema helper D's read side relies on (see rs-plan.md); request_ids and index_pending are the upload side's. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS resources (
  name TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  target_id TEXT NOT NULL DEFAULT '', config_id TEXT NOT NULL DEFAULT '',
  action_id TEXT NOT NULL DEFAULT '', file_set_id TEXT NOT NULL DEFAULT '',
  seq INTEGER NOT NULL,
  finalized INTEGER NOT NULL DEFAULT 0,
  data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_kind ON resources (kind, seq);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v);
CREATE TABLE IF NOT EXISTS request_ids (name TEXT PRIMARY KEY, request_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS index_pending (name TEXT PRIMARY KEY, kind TEXT NOT NULL, ver INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS index_dead_letters (name TEXT PRIMARY KEY, kind TEXT NOT NULL, bytes INTEGER, reason TEXT NOT NULL, at INTEGER NOT NULL);
${REMOTE_ACTIONS_SCHEMA}`;

/** Set while a deleted invocation's search-index rows are still being removed. */
const DELETING = "deleting";

export interface UploadCall extends CallInfo {
  invocationId: string;
}

export type UploadResult = InvocationResult;

export class InvocationDO extends DurableObject<Env> {
  protected readonly sql: SqlStorage;
  private readonly table: ResourceTable;
  private readonly index: IndexSync;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(SCHEMA);
    this.table = new ResourceTable(this.sql);
    this.index = new IndexSync(this.sql, env.INDEX);
  }

  /** Runs one ResultStoreUpload method (request and response in protobuf binary). */
  async upload(method: UploadMethod, request: Uint8Array, call: UploadCall): Promise<UploadResult> {
    try {
      await this.requireNotDeleting();
      const m = ResultStoreUpload.method[method];
      const req = fromBinary(m.input, request);
      const u = new Uploader(this.table, call.invocationId, Date.now());
      const out = this.ctx.storage.transactionSync(() => runUpload(u, method, req as never, call));
      if (method === "deleteInvocation") await this.startDelete();
      else if (u.mutated) await this.settle();
      return { response: toBinary(m.output, create(m.output, out as never)) };
    } catch (e) {
      return failureOf(e);
    }
  }

  /** Applies a batch of one Build Event Service stream (src/bes/ingest.ts), all or nothing. */
  async ingestBuildEvents(request: Uint8Array, call: IngestCall): Promise<InvocationResult> {
    try {
      await this.requireNotDeleting();
      const req = fromBinary(IngestBuildToolEventsRequestSchema, request);
      const u = new Uploader(this.table, call.invocationId, Date.now());
      const out = this.ctx.storage.transactionSync(() => ingestBuildEvents(u, req, call));
      if (u.mutated) await this.settle();
      return { response: toBinary(IngestBuildToolEventsResponseSchema, create(IngestBuildToolEventsResponseSchema, out)) };
    } catch (e) {
      return failureOf(e);
    }
  }

  private async requireNotDeleting(): Promise<void> {
    if (this.table.meta(DELETING) !== undefined && !(await this.finishDelete())) {
      throw new ConnectError("this invocation is still being deleted; retry shortly", Code.Unavailable);
    }
  }

  /**
   * Auto-finalize (auto_finalize_time, or idle for RESULTSTORE_AUTO_FINALIZE_SECONDS), the end of
   * post-processing, and retries of search-index writes and removals.
   */
  override async alarm(): Promise<void> {
    if (this.table.meta(DELETING) !== undefined) {
      await this.finishDelete();
      return;
    }
    const id = this.table.meta<string>(META.invocationId);
    if (id === undefined) return;
    const u = new Uploader(this.table, id, Date.now());
    const status = u.status();
    if (status === UploadStatus.UPLOADING && Date.now() >= this.autoFinalizeDue()) {
      this.ctx.storage.transactionSync(() => u.finalize(u.invocationKey));
    } else if (status === UploadStatus.POST_PROCESSING) {
      // Post-processing is where ResultStore derives data from the upload (file processing,
      // coverage merges). Kiln derives nothing, so it is done at the first alarm after
      // finalization: the invocation becomes IMMUTABLE a moment after it was finalized.
      this.ctx.storage.transactionSync(() => {
        setUploadStatus(this.table, UploadStatus.IMMUTABLE, Date.now());
        this.table.dirty(u.invocationKey);
      });
    }
    await this.settle();
  }

  private idleMs(): number {
    const s = Number(this.env.RESULTSTORE_AUTO_FINALIZE_SECONDS);
    return (Number.isFinite(s) && s > 0 ? s : 86_400) * 1000;
  }

  /** When an UPLOADING invocation finalizes by itself: its auto_finalize_time, or after the idle time. */
  private autoFinalizeDue(): number {
    const idle = Number(this.table.meta(META.lastModified) ?? 0) + this.idleMs();
    const explicit = Number(this.table.meta(META.autoFinalizeAt) ?? 0);
    return explicit > 0 ? Math.min(explicit, idle) : idle;
  }

  /** After a committed change: write it through to the search index, then re-arm the alarm. */
  private async settle(): Promise<void> {
    const tenant = this.table.meta<string>(META.tenant) ?? "default";
    const ok = await this.index.flush(tenant, () => Number(this.table.meta(META.uploadStatus) ?? 0));
    let at = Infinity;
    const status = Number(this.table.meta(META.uploadStatus) ?? 0);
    if (status === UploadStatus.UPLOADING) at = this.autoFinalizeDue();
    else if (status === UploadStatus.POST_PROCESSING) at = Date.now();
    if (!ok || this.index.pending()) at = Math.min(at, Date.now() + this.index.retryDelayMs());
    await this.arm(at);
  }

  private async arm(at: number): Promise<void> {
    const current = await this.ctx.storage.getAlarm();
    if (at === Infinity) {
      if (current !== null) await this.ctx.storage.deleteAlarm();
    } else if (current !== at) await this.ctx.storage.setAlarm(at);
  }

  /**
   * DeleteInvocation, once the finalized check passed: the invocation disappears at once (rows and
   * state go in one transaction, only the deletion marker stays); its search-index rows are removed
   * next, and the object's storage is wiped when that succeeded (else the alarm retries).
   */
  private async startDelete(): Promise<void> {
    const invocationId = this.table.meta<string>(META.invocationId)!;
    const tenant = this.table.meta<string>(META.tenant) ?? "default";
    this.ctx.storage.transactionSync(() => {
      for (const t of ["resources", "request_ids", "index_pending", "meta", "remote_actions"]) this.sql.exec(`DELETE FROM ${t}`);
      this.table.setMeta(DELETING, JSON.stringify({ tenant, name: nameOf(keyOf("invocation", invocationId)) }));
    });
    await this.finishDelete();
  }

  private async finishDelete(): Promise<boolean> {
    const { tenant, name } = JSON.parse(this.table.meta<string>(DELETING)!) as { tenant: string; name: string };
    if (!(await this.index.remove(tenant, name))) {
      await this.arm(Date.now() + this.index.retryDelayMs());
      return false;
    }
    // Another call finishing the same deletion may have wiped the storage while this one waited
    // for D1, and a new invocation of this id may exist by now: wipe only while still deleting.
    if (this.table.meta(DELETING) === undefined) return true;
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.sql.exec(SCHEMA);
    this.table.reset();
    return true;
  }

  // ---- Remote actions (kiln.invocation.v1.RemoteActions) ----

  /**
   * Counts a remote cache or execution call that named this invocation. Calls may come before the
   * build's first event creates the invocation, so they are kept whether it exists or not.
   */
  async recordRemoteCall(c: RemoteCall): Promise<boolean> {
    if (this.table.meta(DELETING) !== undefined) return false;
    return recordRemoteCall(this.sql, c);
  }

  async listRemoteActions(afterSeq: number, limit: number): Promise<ReturnType<typeof listRemoteActions>> {
    return listRemoteActions(this.sql, afterSeq, limit);
  }

  // ---- Download reads (resultstore-download) ----

  /** One read of this invocation for ResultStoreDownload (src/resultstore/read-store.ts). */
  async read(q: ReadQuery): Promise<ReadResult> {
    if (this.table.meta(DELETING) !== undefined) return { exists: false, uploadStatus: 0, statusTimes: {}, rows: [], more: false };
    return read(this.sql, q);
  }
}
