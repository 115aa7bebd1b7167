// google.devtools.resultstore.v2.ResultStoreUpload: every method authenticates the caller, finds
// the invocation the request is about and runs the method in that invocation's InvocationDO
// (durable-objects/invocation.ts, rules in src/resultstore/), which answers with name and id only.
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError } from "../errors.ts";
import { ResultStoreUpload } from "../gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { UploadMetadataSchema } from "../gen/google/devtools/resultstore/v2/upload_metadata_pb.ts";
import { checkInvocationId } from "../resultstore/ids.ts";
import { invocationStub, responseOf } from "../resultstore/invocation-rpc.ts";
import { parseName, parseUploadMetadataName, type ResourceKind } from "../resultstore/names.ts";
import { responseMask } from "../resultstore/response-mask.ts";
import type { UploadMethod } from "../resultstore/upload-rpc.ts";
import { RESULTSTORE_UPLOAD_MAX } from "./limits.ts";
import { resultStoreScope } from "./scope.ts";

type Methods = typeof ResultStoreUpload.method;

/** Runs `method` in the invocation's Durable Object (one per tenant and invocation id). */
async function run<M extends UploadMethod>(
  ctx: HandlerContext,
  method: M,
  req: MessageShape<Methods[M]["input"]>,
  invocationId: string,
  idAssigned = false,
): Promise<MessageShape<Methods[M]["output"]>> {
  const { env, principal } = await resultStoreScope(ctx, "write");
  const stub = invocationStub(env, principal.tenant, invocationId);
  const m = ResultStoreUpload.method[method];
  const request = toBinary(m.input as DescMessage, req);
  // The surfaces let this service's JSON be up to 3x larger; the message itself stays bounded.
  if (request.byteLength > RESULTSTORE_UPLOAD_MAX) {
    throw new ConnectError(`the request is ${request.byteLength} bytes; at most ${RESULTSTORE_UPLOAD_MAX} are accepted`, Code.ResourceExhausted);
  }
  const result = await stub.upload(method, request, { tenant: principal.tenant, invocationId, idAssigned });
  return fromBinary(m.output, responseOf(result)) as MessageShape<Methods[M]["output"]>;
}

/** The invocation id a resource name belongs to (validated: v3/v4/v5 UUID, lowercased). */
function invocationOf(name: string | undefined, kind: ResourceKind, field: string): string {
  return checkInvocationId(parseName(name ?? "", kind, field).invocationId, field);
}

export const resultStoreUploadService: ServiceImpl<typeof ResultStoreUpload> = {
  createInvocation(req, ctx) {
    const assigned = !req.invocationId;
    // The server assigns a v4 UUID when the client gave none; the request's invocation.name is ignored.
    const id = assigned ? crypto.randomUUID() : checkInvocationId(req.invocationId);
    return run(ctx, "createInvocation", req, id, assigned);
  },
  updateInvocation: (req, ctx) => run(ctx, "updateInvocation", req, invocationOf(req.invocation?.name, "invocation", "invocation.name")),
  mergeInvocation: (req, ctx) => run(ctx, "mergeInvocation", req, invocationOf(req.invocation?.name, "invocation", "invocation.name")),
  touchInvocation: (req, ctx) => run(ctx, "touchInvocation", req, invocationOf(req.name, "invocation", "name")),
  finalizeInvocation: (req, ctx) => run(ctx, "finalizeInvocation", req, invocationOf(req.name, "invocation", "name")),
  deleteInvocation: (req, ctx) => run(ctx, "deleteInvocation", req, invocationOf(req.name, "invocation", "name")),
  createTarget: (req, ctx) => run(ctx, "createTarget", req, invocationOf(req.parent, "invocation", "parent")),
  updateTarget: (req, ctx) => run(ctx, "updateTarget", req, invocationOf(req.target?.name, "target", "target.name")),
  mergeTarget: (req, ctx) => run(ctx, "mergeTarget", req, invocationOf(req.target?.name, "target", "target.name")),
  finalizeTarget: (req, ctx) => run(ctx, "finalizeTarget", req, invocationOf(req.name, "target", "name")),
  createConfiguredTarget: (req, ctx) => run(ctx, "createConfiguredTarget", req, invocationOf(req.parent, "target", "parent")),
  updateConfiguredTarget: (req, ctx) =>
    run(ctx, "updateConfiguredTarget", req, invocationOf(req.configuredTarget?.name, "configuredTarget", "configured_target.name")),
  mergeConfiguredTarget: (req, ctx) =>
    run(ctx, "mergeConfiguredTarget", req, invocationOf(req.configuredTarget?.name, "configuredTarget", "configured_target.name")),
  finalizeConfiguredTarget: (req, ctx) => run(ctx, "finalizeConfiguredTarget", req, invocationOf(req.name, "configuredTarget", "name")),
  createAction: (req, ctx) => run(ctx, "createAction", req, invocationOf(req.parent, "configuredTarget", "parent")),
  updateAction: (req, ctx) => run(ctx, "updateAction", req, invocationOf(req.action?.name, "action", "action.name")),
  mergeAction: (req, ctx) => run(ctx, "mergeAction", req, invocationOf(req.action?.name, "action", "action.name")),
  createConfiguration: (req, ctx) => run(ctx, "createConfiguration", req, invocationOf(req.parent, "invocation", "parent")),
  updateConfiguration: (req, ctx) =>
    run(ctx, "updateConfiguration", req, invocationOf(req.configuration?.name, "configuration", "configuration.name")),
  createFileSet: (req, ctx) => run(ctx, "createFileSet", req, invocationOf(req.parent, "invocation", "parent")),
  updateFileSet: (req, ctx) => run(ctx, "updateFileSet", req, invocationOf(req.fileSet?.name, "fileSet", "file_set.name")),
  mergeFileSet: (req, ctx) => run(ctx, "mergeFileSet", req, invocationOf(req.fileSet?.name, "fileSet", "file_set.name")),
  uploadBatch: (req, ctx) => run(ctx, "uploadBatch", req, invocationOf(req.parent, "invocation", "parent")),
  async getInvocationUploadMetadata(req, ctx) {
    // This read requires a response field mask ("fields" or X-Goog-FieldMask), as the API says.
    const mask = responseMask(ctx, UploadMetadataSchema);
    const id = checkInvocationId(parseUploadMetadataName(req.name), "name");
    return mask.apply(UploadMetadataSchema, await run(ctx, "getInvocationUploadMetadata", req, id));
  },
};
