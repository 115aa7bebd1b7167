// UploadBatch: exactly-once batches. The resume token orders batches from any number of uploader
// machines: a batch whose next_resume_token is already stored is a replay and does nothing; any
// other batch must name the stored token as its resume_token (else ABORTED: fetch the state with
// GetInvocationUploadMetadata and resume). The whole batch runs inside the caller's transaction,
// so one refused request leaves nothing of the batch applied.
import type { MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, invalidArgument } from "../errors.ts";
import {
  UploadRequest_UploadOperation as Op,
  type UploadBatchRequestSchema,
  type UploadRequest,
} from "../gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { checkBatchMask } from "./field-mask.ts";
import { checkResumeToken, checkUploaderState } from "./ids.ts";
import { keyOf, parentOf, parseName, type ResourceKey, type ResourceKind } from "./names.ts";
import type { Resource } from "./resources.ts";
import { META, type Uploader } from "./uploader.ts";

/** Which UploadRequest.Id fields each kind needs; any other id set is a mistake in the request. */
const ID_FIELDS: Record<ResourceKind, ("targetId" | "configurationId" | "actionId" | "fileSetId")[]> = {
  invocation: [],
  target: ["targetId"],
  configuration: ["configurationId"],
  configuredTarget: ["targetId", "configurationId"],
  action: ["targetId", "configurationId", "actionId"],
  fileSet: ["fileSetId"],
};

const SNAKE = { targetId: "target_id", configurationId: "configuration_id", actionId: "action_id", fileSetId: "file_set_id" } as const;

function keyOfRequest(u: Uploader, r: UploadRequest, field: string): { key: ResourceKey; resource: Resource } {
  if (!r.resource.case) throw invalidArgument("the resource is required (invocation, target, …)", `${field}.resource`);
  const kind: ResourceKind = r.resource.case;
  const id = r.id ?? { targetId: "", configurationId: "", actionId: "", fileSetId: "" };
  for (const f of ["targetId", "configurationId", "actionId", "fileSetId"] as const) {
    const needed = ID_FIELDS[kind].includes(f);
    if (needed && !id[f]) throw invalidArgument(`id.${SNAKE[f]} is required for a ${kind}`, `${field}.id.${SNAKE[f]}`);
    if (!needed && id[f]) throw invalidArgument(`id.${SNAKE[f]} does not belong to a ${kind}`, `${field}.id.${SNAKE[f]}`);
  }
  const key = keyOf(kind, u.invocationId, { targetId: id.targetId, configId: id.configurationId, actionId: id.actionId, fileSetId: id.fileSetId });
  return { key, resource: r.resource.value as Resource };
}

function apply(u: Uploader, r: UploadRequest, i: number, last: boolean): void {
  const field = `upload_requests[${i}]`;
  const { key, resource } = keyOfRequest(u, r, field);
  switch (r.uploadOperation) {
    case Op.CREATE:
      if (key.kind === "invocation") throw invalidArgument("CREATE is not for the invocation (CreateInvocation made it)", `${field}.upload_operation`);
      return u.create(key, resource, "", field);
    case Op.UPDATE:
    case Op.MERGE: {
      const mode = r.uploadOperation === Op.UPDATE ? "update" : "merge";
      if (!r.updateMask?.paths.length) throw invalidArgument("UPDATE and MERGE need an update_mask", `${field}.update_mask`);
      checkBatchMask(key.kind, mode, r.updateMask.paths, `${field}.update_mask`);
      if (r.createIfNotFound && key.kind === "invocation") {
        throw invalidArgument("create_if_not_found is not supported for the invocation", `${field}.create_if_not_found`);
      }
      return u.modify(key, resource, r.updateMask.paths, mode, { createIfNotFound: r.createIfNotFound, field });
    }
    case Op.FINALIZE:
      if (key.kind !== "invocation" && key.kind !== "target" && key.kind !== "configuredTarget") {
        throw invalidArgument(`FINALIZE is only for invocations, targets and configured targets, not a ${key.kind}`, `${field}.upload_operation`);
      }
      if (key.kind === "invocation" && !last) throw invalidArgument("FINALIZE of the invocation must be the batch's last request", `${field}.upload_operation`);
      // "No operation on child resources after the parent is finalized" covers FINALIZE too: a
      // configured target's FINALIZE after its target's (or anything after the invocation's) is
      // refused, where the single Finalize RPCs would answer as for an already finalized resource.
      if (key.kind !== "invocation") u.requireWritable(parentOf(key)!);
      // The invocation's too, in a batch: a finalized invocation takes no more batches (they would
      // move its resume token and uploader state), though the single FinalizeInvocation is idempotent.
      else u.requireWritable(key);
      return u.finalize(key);
    default:
      throw invalidArgument("upload_operation must be CREATE, UPDATE, MERGE or FINALIZE", `${field}.upload_operation`);
  }
}

export function uploadBatch(u: Uploader, req: MessageShape<typeof UploadBatchRequestSchema>) {
  const parent = parseName(req.parent, "invocation", "parent");
  if (parent.invocationId.toLowerCase() !== u.invocationId) throw invalidArgument(`"${req.parent}" is not this invocation`, "parent");
  u.requireInvocation();
  u.authorize(req.authorizationToken);
  if (!u.batchMode()) {
    throw new ConnectError("this invocation was created without initial_resume_token: use the single upload RPCs", Code.FailedPrecondition);
  }
  checkResumeToken(req.nextResumeToken, "next_resume_token");
  const stored = u.table.meta<string>(META.resumeToken) ?? "";
  if (req.nextResumeToken === stored) return {}; // this batch was committed already
  checkResumeToken(req.resumeToken, "resume_token");
  if (req.resumeToken !== stored) {
    throw new ConnectError(
      "resume_token is not the last committed batch's token: another uploader moved on; read GetInvocationUploadMetadata and resume from there",
      Code.Aborted,
    );
  }
  checkUploaderState(req.uploaderState);
  // An empty batch is a Touch, and like a Touch it is refused once the invocation is finalized.
  if (req.uploadRequests.length === 0) u.touchInvocation();
  req.uploadRequests.forEach((r, i) => {
    try {
      apply(u, r, i, i === req.uploadRequests.length - 1);
    } catch (e) {
      if (e instanceof ConnectError && !e.rawMessage.startsWith("upload_requests[")) {
        throw new ConnectError(`upload_requests[${i}]: ${e.rawMessage}`, e.code, undefined, e.details as never);
      }
      throw e;
    }
  });
  u.table.setMeta(META.resumeToken, req.nextResumeToken);
  u.table.setMeta(META.uploaderState, req.uploaderState);
  u.touch();
  return {};
}
