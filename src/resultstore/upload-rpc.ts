// One handler per ResultStoreUpload method, run by InvocationDO inside a storage transaction.
// The service (src/services/resultstore-upload.ts) authenticates the caller and routes the call to
// the invocation's Durable Object; everything the invocation's state decides happens here.
import { create, toBinary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, invalidArgument } from "../errors.ts";
import { UploadStatus } from "../gen/google/devtools/resultstore/v2/common_pb.ts";
import { ResultStoreUpload } from "../gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { InvocationSchema, type Invocation } from "../gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { uploadBatch } from "./batch.ts";
import { checkAuthorizationToken, checkRequestId, checkResumeToken, checkUploaderState } from "./ids.ts";
import { keyOf, nameOf, parseName, type ResourceKey, type ResourceKind } from "./names.ts";
import { nameAndId, stamp, type Resource } from "./resources.ts";
import { META, setUploadStatus, Uploader } from "./uploader.ts";

type Methods = typeof ResultStoreUpload.method;
export type UploadMethod = keyof Methods;

/** What the service tells the Durable Object besides the request. */
export interface CallInfo {
  tenant: string;
  /** CreateInvocation: true when the server chose the id (the request left invocation_id empty). */
  idAssigned?: boolean;
}

type Handler<M extends UploadMethod> = (
  u: Uploader,
  req: MessageShape<Methods[M]["input"]>,
  call: CallInfo,
) => MessageInitShape<Methods[M]["output"]>;

/** Parses a resource name and checks it belongs to the invocation this object holds. */
function keyIn(u: Uploader, name: string | undefined, kind: ResourceKind, field: string): ResourceKey {
  const k = parseName(name ?? "", kind, field);
  if (k.invocationId.toLowerCase() !== u.invocationId) throw invalidArgument(`"${name}" is not in invocation "${u.invocationId}"`, field);
  return { ...k, invocationId: u.invocationId };
}

/** The checks every upload RPC on an existing invocation starts with. */
function open(u: Uploader, token: string): void {
  u.requireInvocation();
  u.authorize(token);
  u.requireSingleMode();
}

const child = (u: Uploader, parent: string, parentKind: ResourceKind, kind: ResourceKind, id: string, field: string): ResourceKey => {
  const p = keyIn(u, parent, parentKind, "parent");
  if (!id) throw invalidArgument(`${field} is required`, field);
  switch (kind) {
    case "target":
      return keyOf(kind, u.invocationId, { targetId: id });
    case "configuration":
      return keyOf(kind, u.invocationId, { configId: id });
    case "fileSet":
      return keyOf(kind, u.invocationId, { fileSetId: id });
    case "configuredTarget":
      return keyOf(kind, u.invocationId, { targetId: p.targetId, configId: id });
    case "action":
      return keyOf(kind, u.invocationId, { targetId: p.targetId, configId: p.configId, actionId: id });
    default:
      throw new Error(`not a child kind: ${kind}`);
  }
};

const createChild =
  <M extends UploadMethod>(
    parentKind: ResourceKind,
    kind: ResourceKind,
    pick: (req: MessageShape<Methods[M]["input"]>) => { id: string; idField: string; resource: Resource | undefined; resourceField: string },
  ): Handler<M> =>
  (u, req, _call) => {
    const r = req as unknown as { requestId: string; parent: string; authorizationToken: string };
    checkRequestId(r.requestId);
    open(u, r.authorizationToken);
    const { id, idField, resource, resourceField } = pick(req);
    const k = child(u, r.parent, parentKind, kind, id, idField);
    u.create(k, resource, r.requestId, resourceField);
    return nameAndId(k) as never;
  };

const modify =
  <M extends UploadMethod>(kind: ResourceKind, mode: "update" | "merge", resourceField: string, pick: (req: MessageShape<Methods[M]["input"]>) => Resource | undefined): Handler<M> =>
  (u, req) => {
    const r = req as unknown as { requestId?: string; authorizationToken: string; updateMask?: { paths: string[] }; createIfNotFound?: boolean };
    if (r.requestId) checkRequestId(r.requestId);
    const resource = pick(req);
    if (!resource) throw invalidArgument(`${resourceField} is required`, resourceField);
    const k = keyIn(u, resource.name, kind, `${resourceField}.name`);
    open(u, r.authorizationToken);
    u.modify(k, resource, r.updateMask?.paths, mode, { requestId: r.requestId, createIfNotFound: r.createIfNotFound, field: resourceField });
    return nameAndId(k) as never;
  };

const finalize =
  <M extends UploadMethod>(kind: ResourceKind): Handler<M> =>
  (u, req) => {
    const r = req as unknown as { name: string; authorizationToken: string };
    const k = keyIn(u, r.name, kind, "name");
    open(u, r.authorizationToken);
    u.finalize(k);
    const out = nameAndId(k);
    return { name: out.name, id: out.id } as never;
  };

function createInvocation(u: Uploader, req: MessageShape<Methods["createInvocation"]["input"]>, call: CallInfo): Invocation {
  const k = u.invocationKey;
  if (req.requestId) {
    checkRequestId(req.requestId);
    if (call.idAssigned) throw invalidArgument("request_id needs invocation_id", "request_id");
    if (req.initialResumeToken) throw invalidArgument("initial_resume_token cannot be combined with request_id", "initial_resume_token");
  }
  if (req.initialResumeToken) checkResumeToken(req.initialResumeToken, "initial_resume_token");
  if (req.authorizationToken) checkAuthorizationToken(req.authorizationToken);
  checkUploaderState(req.uploaderState);
  if (!req.invocation) throw invalidArgument("the invocation to create is required", "invocation");
  if (u.exists()) {
    // Replays answer as the first call did: the same request id, or (batch uploads) an
    // initial_resume_token equal to the stored resume token.
    if (req.requestId && u.table.lastRequestId(k) === req.requestId) return nameAndId(k) as Invocation;
    if (req.initialResumeToken && u.batchMode() && u.table.meta<string>(META.resumeToken) === req.initialResumeToken) return nameAndId(k) as Invocation;
    throw new ConnectError(`invocation "${nameOf(k)}" already exists`, Code.AlreadyExists);
  }
  const t = u.table;
  t.setMeta(META.invocationId, u.invocationId);
  t.setMeta(META.tenant, call.tenant);
  setUploadStatus(t, UploadStatus.UPLOADING, u.now);
  t.setMeta(META.token, req.authorizationToken);
  t.setMeta(META.autoFinalizeAt, req.autoFinalizeTime ? timestampMs(req.autoFinalizeTime) : 0);
  t.setMeta(META.batchMode, req.initialResumeToken ? 1 : 0);
  t.setMeta(META.resumeToken, req.initialResumeToken);
  t.setMeta(META.uploaderState, req.uploaderState);
  t.insert(k, toBinary(InvocationSchema, stamp(k, create(InvocationSchema, req.invocation))));
  t.setRequestId(k, req.requestId);
  u.touch();
  return nameAndId(k) as Invocation;
}

function deleteInvocation(u: Uploader, req: MessageShape<Methods["deleteInvocation"]["input"]>) {
  keyIn(u, req.name, "invocation", "name");
  u.requireInvocation();
  if (!u.finalized()) throw new ConnectError(`invocation "${req.name}" is not finalized; retry once it is`, Code.FailedPrecondition);
  return {};
}

const handlers: { [M in UploadMethod]: Handler<M> } = {
  createInvocation,
  updateInvocation: modify("invocation", "update", "invocation", (r) => r.invocation),
  mergeInvocation: modify("invocation", "merge", "invocation", (r) => r.invocation),
  touchInvocation(u, req) {
    const k = keyIn(u, req.name, "invocation", "name");
    open(u, req.authorizationToken);
    u.touchInvocation();
    return { name: nameOf(k), id: nameAndId(k).id as never };
  },
  finalizeInvocation: finalize("invocation"),
  // The DO deletes the storage after this check passes (see InvocationDO.deleteInvocation).
  deleteInvocation,
  createTarget: createChild("invocation", "target", (r) => ({ id: r.targetId, idField: "target_id", resource: r.target, resourceField: "target" })),
  updateTarget: modify("target", "update", "target", (r) => r.target),
  mergeTarget: modify("target", "merge", "target", (r) => r.target),
  finalizeTarget: finalize("target"),
  createConfiguredTarget: createChild("target", "configuredTarget", (r) => ({
    id: r.configId,
    idField: "config_id",
    resource: r.configuredTarget,
    resourceField: "configured_target",
  })),
  updateConfiguredTarget: modify("configuredTarget", "update", "configured_target", (r) => r.configuredTarget),
  mergeConfiguredTarget: modify("configuredTarget", "merge", "configured_target", (r) => r.configuredTarget),
  finalizeConfiguredTarget: finalize("configuredTarget"),
  createAction: createChild("configuredTarget", "action", (r) => ({ id: r.actionId, idField: "action_id", resource: r.action, resourceField: "action" })),
  updateAction: modify("action", "update", "action", (r) => r.action),
  mergeAction: modify("action", "merge", "action", (r) => r.action),
  createConfiguration: createChild("invocation", "configuration", (r) => ({
    id: r.configId,
    idField: "config_id",
    resource: r.configuration,
    resourceField: "configuration",
  })),
  updateConfiguration: modify("configuration", "update", "configuration", (r) => r.configuration),
  createFileSet: createChild("invocation", "fileSet", (r) => ({ id: r.fileSetId, idField: "file_set_id", resource: r.fileSet, resourceField: "file_set" })),
  updateFileSet: modify("fileSet", "update", "file_set", (r) => r.fileSet),
  mergeFileSet: modify("fileSet", "merge", "file_set", (r) => r.fileSet),
  uploadBatch,
  getInvocationUploadMetadata(u, req) {
    u.requireInvocation();
    u.authorize(req.authorizationToken);
    return {
      name: `${nameOf(u.invocationKey)}/uploadMetadata`,
      resumeToken: u.table.meta<string>(META.resumeToken) ?? "",
      uploaderState: new Uint8Array(u.table.meta<ArrayBuffer>(META.uploaderState) ?? new ArrayBuffer(0)),
    };
  },
};

export function runUpload<M extends UploadMethod>(u: Uploader, method: M, req: MessageShape<Methods[M]["input"]>, call: CallInfo) {
  return (handlers[method] as Handler<M>)(u, req, call);
}
