// The upload rules of one invocation, run synchronously inside its Durable Object's transaction:
// existence and parent checks, the authorization token, request-id replay, finalization, masks,
// and the idle clock that drives auto-finalize. Every method throws a ConnectError on refusal; the
// caller's transaction then rolls back whatever the call (or batch) had written.
import { create, fromBinary, toBinary, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError, invalidArgument, notFound } from "../errors.ts";
import { UploadStatus } from "../gen/google/devtools/resultstore/v2/common_pb.ts";
import { applyMaskKeepingImmutable, checkMask, type MaskMode } from "./field-mask.ts";
import { checkChildIds } from "./ids.ts";
import { keyOf, lineageOf, nameOf, parentOf, type ResourceKey } from "./names.ts";
import type { ResourceTable } from "./resource-table.ts";
import { schemaOf, stamp, type Resource } from "./resources.ts";
import { tokenMatches } from "./token.ts";

/** Meta keys (strings in the meta table). upload_status, tenant and invocation_id are read by the download side. */
export const META = {
  invocationId: "invocation_id",
  tenant: "tenant",
  uploadStatus: "upload_status",
  token: "authorization_token",
  /** 1 when created with initial_resume_token: uploads then go only through UploadBatch. */
  batchMode: "batch_mode",
  resumeToken: "resume_token",
  uploaderState: "uploader_state",
  /** auto_finalize_time in ms since the epoch (0: none). */
  autoFinalizeAt: "auto_finalize_at",
  lastModified: "last_modified",
  /** When the invocation entered each upload status, in ms since the epoch (DownloadMetadata). */
  createTime: "create_time",
  finalizeTime: "finalize_time",
  immutableTime: "immutable_time",
} as const;

const STATUS_TIME: Partial<Record<UploadStatus, string>> = {
  [UploadStatus.UPLOADING]: META.createTime,
  [UploadStatus.POST_PROCESSING]: META.finalizeTime,
  [UploadStatus.IMMUTABLE]: META.immutableTime,
};

/** Moves the invocation to an upload status, noting when (DownloadMetadata's times). */
export function setUploadStatus(table: ResourceTable, status: UploadStatus, now: number): void {
  table.setMeta(META.uploadStatus, status);
  const at = STATUS_TIME[status];
  if (at) table.setMeta(at, now);
}

const failedPrecondition = (message: string) => new ConnectError(message, Code.FailedPrecondition);

export class Uploader {
  /** Set by every call that changed something (the DO then writes the index and re-arms its alarm). */
  mutated = false;

  constructor(
    readonly table: ResourceTable,
    readonly invocationId: string,
    readonly now: number,
  ) {}

  get invocationKey(): ResourceKey {
    return keyOf("invocation", this.invocationId);
  }

  exists(): boolean {
    return this.table.meta(META.invocationId) !== undefined;
  }

  status(): UploadStatus {
    return Number(this.table.meta(META.uploadStatus) ?? 0) as UploadStatus;
  }

  finalized(): boolean {
    return this.status() !== UploadStatus.UPLOADING;
  }

  requireInvocation(): void {
    if (!this.exists()) throw notFound(`invocation "${nameOf(this.invocationKey)}" not found`);
  }

  /** Once CreateInvocation set a token, every upload RPC must present exactly that token. */
  authorize(presented: string): void {
    const stored = this.table.meta<string>(META.token);
    if (stored && !tokenMatches(stored, presented)) {
      throw new ConnectError(
        presented ? "authorization_token does not match the invocation's token" : "this invocation requires its authorization_token",
        Code.PermissionDenied,
      );
    }
  }

  batchMode(): boolean {
    return Number(this.table.meta(META.batchMode) ?? 0) === 1;
  }

  /** Invocations created with initial_resume_token take uploads only through UploadBatch. */
  requireSingleMode(): void {
    if (this.batchMode()) throw failedPrecondition("this invocation was created with initial_resume_token: upload through UploadBatch");
  }

  private touched = false;

  /** A modification: resets the idle clock of auto-finalize (one meta write per call, not per resource of a batch). */
  touch(): void {
    if (!this.touched) this.table.setMeta(META.lastModified, this.now);
    this.touched = true;
    this.mutated = true;
  }

  load<T extends Resource>(k: ResourceKey): { msg: T; finalized: boolean } | null {
    const row = this.table.get(k);
    return row ? { msg: fromBinary(schemaOf[k.kind], row.data) as T, finalized: row.finalized } : null;
  }

  /** NOT_FOUND for a missing ancestor, FAILED_PRECONDITION for a finalized one (or the resource itself). */
  requireWritable(k: ResourceKey): void {
    if (this.finalized()) throw failedPrecondition(`invocation "${nameOf(this.invocationKey)}" is finalized`);
    for (const a of lineageOf(k)) {
      if (a.kind === "invocation") continue;
      const row = this.table.get(a);
      if (!row) throw notFound(`${a.kind} "${nameOf(a)}" not found`);
      if (row.finalized) throw failedPrecondition(`${a.kind} "${nameOf(a)}" is finalized`);
    }
  }

  /** Creates a child resource. A request id equal to the resource's last one answers as before. */
  create(k: ResourceKey, msg: Message | undefined, requestId: string, field: string): void {
    checkChildIds(k);
    if (!msg) throw invalidArgument(`the ${k.kind} to create is required`, field);
    if (requestId && this.table.get(k) && this.table.lastRequestId(k) === requestId) return;
    this.requireWritable(parentOf(k)!);
    if (k.kind === "configuredTarget" && !this.table.get(keyOf("configuration", k.invocationId, { configId: k.configId }))) {
      throw notFound(`configuration "${k.configId}" not found in invocation "${nameOf(this.invocationKey)}"`);
    }
    if (this.table.get(k)) throw new ConnectError(`${k.kind} "${nameOf(k)}" already exists`, Code.AlreadyExists);
    const stored = stamp(k, { ...msg } as Resource);
    this.table.insert(k, toBinary(schemaOf[k.kind], stored));
    if (requestId) this.table.setRequestId(k, requestId); // a new resource has no earlier one to clear
    this.touch();
  }

  /** Update (replace and clear under the mask) or Merge (also append repeated fields). */
  modify(
    k: ResourceKey,
    msg: Message | undefined,
    paths: readonly string[] | undefined,
    mode: MaskMode,
    opts: { requestId?: string; createIfNotFound?: boolean; field: string },
  ): void {
    const schema = schemaOf[k.kind];
    const mask = checkMask(schema, paths);
    if (!msg) throw invalidArgument(`the ${k.kind} is required`, opts.field);
    const current = this.load(k);
    if (!current) {
      if (opts.createIfNotFound && k.kind !== "invocation") return this.create(k, msg, opts.requestId ?? "", opts.field);
      throw notFound(`${k.kind} "${nameOf(k)}" not found`);
    }
    if (opts.requestId && this.table.lastRequestId(k) === opts.requestId) return;
    this.requireWritable(k);
    const next = create(schema, current.msg as never) as Resource;
    applyMaskKeepingImmutable(schema, next, msg, mask, mode, opts.field);
    this.table.replace(k, toBinary(schema, stamp(k, next)));
    this.table.setRequestId(k, opts.requestId ?? "");
    this.touch();
  }

  /** Finalize is implicitly idempotent: finalizing a finalized resource succeeds. */
  finalize(k: ResourceKey): void {
    if (k.kind === "invocation") {
      if (this.finalized()) return;
      this.table.finalizeAll();
      setUploadStatus(this.table, UploadStatus.POST_PROCESSING, this.now);
      this.table.setRequestId(k, "");
      this.table.dirty(k);
      this.mutated = true;
      return;
    }
    const row = this.table.get(k);
    if (!row) throw notFound(`${k.kind} "${nameOf(k)}" not found`);
    if (row.finalized || this.finalized()) return;
    this.table.finalize(k);
    this.table.setRequestId(k, "");
    this.touch();
  }

  /** TouchInvocation: proof of life for an upload that is still going. */
  touchInvocation(): void {
    if (this.finalized()) throw failedPrecondition(`invocation "${nameOf(this.invocationKey)}" is finalized`);
    this.touch();
  }
}
