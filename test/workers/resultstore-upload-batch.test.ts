// UploadBatch: exactly-once batches ordered by resume tokens, atomicity, the allowed mask patterns
// and ordering rules, uploader_state, and the separation of batch and single uploads.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { InvocationSchema } from "../../src/gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { ResultStoreUpload, UploadRequest_UploadOperation as Op } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { TargetSchema } from "../../src/gen/google/devtools/resultstore/v2/target_pb.ts";
import { codeOf, connectClient, errorOf, grpcWebClient } from "./helpers.ts";
import { metaOf, resourceCount, stored, upload, uuid } from "./resultstore-upload-helpers.ts";

const tok = (s: string) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_");

async function batchInvocation() {
  const id = uuid();
  const token = uuid();
  const initial = tok("start");
  const inv = await upload.createInvocation({ invocationId: id, authorizationToken: token, initialResumeToken: initial, invocation: {} });
  return { id, token, name: inv.name, initial };
}

const targetCreate = (targetId: string, extra: MessageInitShape<typeof TargetSchema> = {}) => ({ id: { targetId }, uploadOperation: Op.CREATE, resource: { case: "target" as const, value: { ...extra } } });

describe("UploadBatch", () => {
  it("commits batches in resume-token order, replays silently and refuses a stale resume_token (ABORTED)", async () => {
    const { id, name, token, initial } = await batchInvocation();
    const batch1 = {
      parent: name,
      authorizationToken: token,
      resumeToken: initial,
      nextResumeToken: tok("b1"),
      uploaderState: new TextEncoder().encode("after b1"),
      uploadRequests: [
        { id: { configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "configuration" as const, value: {} } },
        targetCreate("//t1"),
        { id: { targetId: "//t1", configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "configuredTarget" as const, value: {} } },
        {
          id: { targetId: "//t1", configurationId: "c", actionId: "build" },
          uploadOperation: Op.CREATE,
          resource: { case: "action" as const, value: {} },
        },
        { id: { fileSetId: "fs" }, uploadOperation: Op.CREATE, resource: { case: "fileSet" as const, value: {} } },
      ],
    };
    expect(await upload.uploadBatch(batch1)).toEqual(expect.objectContaining({}));
    expect(await resourceCount(id)).toBe(6);
    // The same batch again (a retry after a lost answer): nothing happens, no error.
    await upload.uploadBatch(batch1);
    expect(await resourceCount(id)).toBe(6);
    // A batch built on an old token: another uploader moved on.
    const stale = { ...batch1, nextResumeToken: tok("b2"), uploadRequests: [targetCreate("//t2")] };
    expect(await codeOf(upload.uploadBatch(stale))).toBe(Code.Aborted);
    expect(await resourceCount(id)).toBe(6);
    const md = await upload.getInvocationUploadMetadata(
      { name: `${name}/uploadMetadata`, authorizationToken: token },
      { headers: { "X-Goog-FieldMask": "resume_token,uploader_state" } },
    );
    expect(md.resumeToken).toBe(tok("b1"));
    expect(new TextDecoder().decode(md.uploaderState)).toBe("after b1");
    expect(md.name).toBe("");
    await upload.uploadBatch({ ...stale, resumeToken: md.resumeToken });
    expect(await resourceCount(id)).toBe(7);
    expect(await metaOf(id, "resume_token")).toBe(tok("b2"));
  });

  it("applies a batch atomically: a refused request in the middle leaves nothing applied", async () => {
    const { id, name, token, initial } = await batchInvocation();
    const base = { parent: name, authorizationToken: token, resumeToken: initial, nextResumeToken: tok("n1") };
    const bad = [
      targetCreate("a"),
      { id: { targetId: "a" }, uploadOperation: Op.UPDATE, updateMask: { paths: ["status_attributes"] }, resource: { case: "target" as const, value: { statusAttributes: { status: Status.BUILT } } } },
      // The configured target's configuration does not exist: NOT_FOUND for the whole batch.
      { id: { targetId: "a", configurationId: "missing" }, uploadOperation: Op.CREATE, resource: { case: "configuredTarget" as const, value: {} } },
      targetCreate("b"),
    ];
    const err = await errorOf(upload.uploadBatch({ ...base, uploadRequests: bad }));
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).toMatch(/^upload_requests\[2\]/);
    expect(await resourceCount(id)).toBe(1);
    expect(await metaOf(id, "resume_token")).toBe(initial);
    // Same for a duplicate create in the middle.
    expect(await codeOf(upload.uploadBatch({ ...base, uploadRequests: [targetCreate("x"), targetCreate("x")] }))).toBe(Code.AlreadyExists);
    expect(await resourceCount(id)).toBe(1);
    // The corrected batch goes through under the same tokens.
    await upload.uploadBatch({ ...base, uploadRequests: [bad[0]!, bad[1]!, bad[3]!] });
    expect(await resourceCount(id)).toBe(3);
    expect((await stored(TargetSchema, id, `${name}/targets/a`))?.statusAttributes?.status).toBe(Status.BUILT);
  });

  it("allows only the documented update-mask patterns", async () => {
    const { id, name, token, initial } = await batchInvocation();
    let cur = initial;
    let n = 0;
    const send = async (...uploadRequests: object[]) => {
      const next = tok(`m${n++}`);
      const r = await codeOf(upload.uploadBatch({ parent: name, authorizationToken: token, resumeToken: cur, nextResumeToken: next, uploadRequests }));
      if (r === "ok") cur = next;
      return r;
    };
    const inv = (op: Op, paths: string[], value: object = {}) => ({ uploadOperation: op, updateMask: { paths }, resource: { case: "invocation" as const, value } });
    expect(await send(targetCreate("t"))).toBe("ok");
    expect(await send(inv(Op.UPDATE, ["status_attributes"], { statusAttributes: { status: Status.TESTING } }))).toBe("ok");
    expect(await send(inv(Op.UPDATE, ["status_attributes.description", "invocation_attributes.users"]))).toBe("ok");
    expect(await send(inv(Op.MERGE, ["invocation_attributes.labels"], { invocationAttributes: { labels: ["x"] } }))).toBe("ok");
    expect(await send(inv(Op.MERGE, ["invocation_attributes.labels"], { invocationAttributes: { labels: ["y"] } }))).toBe("ok");
    expect((await stored(InvocationSchema, id, name))?.invocationAttributes?.labels).toEqual(["x", "y"]);
    expect(await send(inv(Op.UPDATE, ["status_attributes.status.x"]))).toBe(Code.InvalidArgument);
    expect(await send(inv(Op.MERGE, ["status_attributes"]))).toBe(Code.InvalidArgument);
    expect(await send(inv(Op.UPDATE, []))).toBe(Code.InvalidArgument);
    const tgt = (op: Op, paths: string[]) => ({ id: { targetId: "t" }, uploadOperation: op, updateMask: { paths }, resource: { case: "target" as const, value: {} } });
    expect(await send(tgt(Op.UPDATE, ["target_attributes.type"]))).toBe(Code.InvalidArgument);
    expect(await send(tgt(Op.UPDATE, ["timing.duration"]))).toBe("ok");
    expect(await send(tgt(Op.MERGE, ["files"]))).toBe("ok");
    expect(await send({ id: { configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "configuration", value: {} } })).toBe("ok");
    expect(await send({ id: { configurationId: "c" }, uploadOperation: Op.MERGE, updateMask: { paths: ["status_attributes"] }, resource: { case: "configuration", value: {} } })).toBe(
      Code.InvalidArgument,
    );
    // Ids must fit the resource; the operation must be set; CREATE is not for the invocation.
    expect(await send({ id: { configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "target", value: {} } })).toBe(Code.InvalidArgument);
    expect(await send({ ...targetCreate("t9"), uploadOperation: Op.UPLOAD_OPERATION_UNSPECIFIED })).toBe(Code.InvalidArgument);
    expect(await send({ uploadOperation: Op.CREATE, resource: { case: "invocation", value: {} } })).toBe(Code.InvalidArgument);
    expect(await send({ ...inv(Op.UPDATE, ["timing"]), createIfNotFound: true })).toBe(Code.InvalidArgument);
    // create_if_not_found on a child creates it.
    expect(await send({ ...tgt(Op.UPDATE, ["timing"]), id: { targetId: "new" }, createIfNotFound: true })).toBe("ok");
    expect(await resourceCount(id)).toBe(4);
  });

  it("enforces the ordering rules: FINALIZE of the invocation last, nothing under a finalized parent", async () => {
    const { id, name, token, initial } = await batchInvocation();
    const base = { parent: name, authorizationToken: token, resumeToken: initial, nextResumeToken: tok("o1") };
    const finInv = { uploadOperation: Op.FINALIZE, resource: { case: "invocation" as const, value: {} } };
    const finTarget = { id: { targetId: "t" }, uploadOperation: Op.FINALIZE, resource: { case: "target" as const, value: {} } };
    expect(await codeOf(upload.uploadBatch({ ...base, uploadRequests: [finInv, targetCreate("t")] }))).toBe(Code.InvalidArgument);
    const cfg = { id: { configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "configuration" as const, value: {} } };
    const ct = { id: { targetId: "t", configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "configuredTarget" as const, value: {} } };
    expect(await codeOf(upload.uploadBatch({ ...base, uploadRequests: [cfg, targetCreate("t"), finTarget, ct] }))).toBe(Code.FailedPrecondition);
    const finAction = { id: { targetId: "t", configurationId: "c", actionId: "a" }, uploadOperation: Op.FINALIZE, resource: { case: "action" as const, value: {} } };
    expect(await codeOf(upload.uploadBatch({ ...base, uploadRequests: [finAction] }))).toBe(Code.InvalidArgument);
    expect(await resourceCount(id)).toBe(1);
    // A finalized target takes no FINALIZE (nor anything else) of its configured targets, in the
    // same batch or a later one; its own FINALIZE again is fine (idempotent).
    const finCt = { id: { targetId: "t", configurationId: "c" }, uploadOperation: Op.FINALIZE, resource: { case: "configuredTarget" as const, value: {} } };
    expect(await codeOf(upload.uploadBatch({ ...base, uploadRequests: [cfg, targetCreate("t"), ct, finTarget, finCt] }))).toBe(Code.FailedPrecondition);
    await upload.uploadBatch({ ...base, uploadRequests: [cfg, targetCreate("t"), ct, finTarget] });
    const next = { ...base, resumeToken: tok("o1"), nextResumeToken: tok("o1b") };
    expect(await codeOf(upload.uploadBatch({ ...next, uploadRequests: [finCt] }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.uploadBatch({ ...next, uploadRequests: [finTarget] }))).toBe("ok");
    expect(await metaOf(id, "resume_token")).toBe(tok("o1b"));
  });

  it("after the invocation's FINALIZE takes nothing more, and a replay of the finalizing batch stays silent", async () => {
    const { id, name, token, initial } = await batchInvocation();
    const base = { parent: name, authorizationToken: token, resumeToken: initial, nextResumeToken: tok("o1") };
    const finInv = { uploadOperation: Op.FINALIZE, resource: { case: "invocation" as const, value: {} } };
    const finTarget = { id: { targetId: "t" }, uploadOperation: Op.FINALIZE, resource: { case: "target" as const, value: {} } };
    const cfg = { id: { configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "configuration" as const, value: {} } };
    const ct = { id: { targetId: "t", configurationId: "c" }, uploadOperation: Op.CREATE, resource: { case: "configuredTarget" as const, value: {} } };
    await upload.uploadBatch({ ...base, uploadRequests: [cfg, targetCreate("t"), ct, finTarget, finInv] });
    expect([2, 3]).toContain(await metaOf(id, "upload_status"));
    // Replaying the finalizing batch is still a silent success; a new one is refused.
    expect(await codeOf(upload.uploadBatch({ ...base, uploadRequests: [cfg, targetCreate("t"), ct, finTarget, finInv] }))).toBe("ok");
    expect(await codeOf(upload.uploadBatch({ ...base, resumeToken: tok("o1"), nextResumeToken: tok("o2"), uploadRequests: [] }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.uploadBatch({ ...base, resumeToken: tok("o1"), nextResumeToken: tok("o2"), uploadRequests: [finTarget] }))).toBe(Code.FailedPrecondition);
    // Even a batch of nothing but the invocation's FINALIZE again (FinalizeInvocation alone is idempotent).
    expect(await codeOf(upload.uploadBatch({ ...base, resumeToken: tok("o1"), nextResumeToken: tok("o2"), uploaderState: new Uint8Array(8), uploadRequests: [finInv] }))).toBe(Code.FailedPrecondition);
    expect(await metaOf(id, "resume_token")).toBe(tok("o1"));
  });

  it("lets exactly one of many concurrent batches on the same resume_token commit", async () => {
    const { id, name, token, initial } = await batchInvocation();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        codeOf(upload.uploadBatch({ parent: name, authorizationToken: token, resumeToken: initial, nextResumeToken: tok(`c${i}`), uploadRequests: [targetCreate(`t${i}`)] })),
      ),
    );
    expect(results.filter((c) => c === "ok")).toHaveLength(1);
    expect(results.filter((c) => c === Code.Aborted)).toHaveLength(7);
    const winner = results.indexOf("ok");
    expect(await metaOf(id, "resume_token")).toBe(tok(`c${winner}`));
    expect(await resourceCount(id)).toBe(2);
    expect(await stored(TargetSchema, id, `${name}/targets/t${winner}`)).not.toBeNull();
  });

  it("acts as a Touch when empty, and checks tokens and the upload mode", async () => {
    const { id, name, token, initial } = await batchInvocation();
    const before = Number(await metaOf(id, "last_modified"));
    await new Promise((r) => setTimeout(r, 10));
    await upload.uploadBatch({ parent: name, authorizationToken: token, resumeToken: initial, nextResumeToken: tok("e1"), uploadRequests: [] });
    expect(Number(await metaOf(id, "last_modified"))).toBeGreaterThan(before);
    expect(await metaOf(id, "resume_token")).toBe(tok("e1"));
    const ok = { parent: name, authorizationToken: token, resumeToken: tok("e1"), nextResumeToken: tok("e2") };
    expect(await codeOf(upload.uploadBatch({ ...ok, authorizationToken: uuid() }))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.uploadBatch({ ...ok, authorizationToken: "" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.uploadBatch({ ...ok, nextResumeToken: "not base64!" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.uploadBatch({ ...ok, nextResumeToken: "" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.uploadBatch({ ...ok, uploaderState: new Uint8Array(1024 * 1024 + 1) }))).toBe(Code.InvalidArgument);
    // A batch invocation takes no single upload RPCs; a single-upload invocation no batches.
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "t", target: {}, authorizationToken: token }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.finalizeInvocation({ name, authorizationToken: token }))).toBe(Code.FailedPrecondition);
    const single = await upload.createInvocation({ invocationId: uuid(), authorizationToken: token, invocation: {} });
    expect(await codeOf(upload.uploadBatch({ ...ok, parent: single.name }))).toBe(Code.FailedPrecondition);
  });

  it("makes a CreateInvocation with the matching initial_resume_token a silent no-op", async () => {
    const { id, token, initial } = await batchInvocation();
    const again = await upload.createInvocation({ invocationId: id, authorizationToken: token, initialResumeToken: initial, invocation: { statusAttributes: { status: Status.FAILED } } });
    expect(again.name).toBe(`invocations/${id}`);
    expect((await stored(InvocationSchema, id, again.name))?.statusAttributes).toBeUndefined();
    expect(await codeOf(upload.createInvocation({ invocationId: id, initialResumeToken: tok("other"), invocation: {} }))).toBe(Code.AlreadyExists);
    expect(await codeOf(upload.createInvocation({ invocationId: uuid(), initialResumeToken: "a+b/", invocation: {} }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createInvocation({ invocationId: uuid(), uploaderState: new Uint8Array(1024 * 1024 + 1), invocation: {} }))).toBe(
      Code.InvalidArgument,
    );
  });

  it("needs a response field mask for GetInvocationUploadMetadata", async () => {
    const { name, token } = await batchInvocation();
    const req = { name: `${name}/uploadMetadata`, authorizationToken: token };
    expect(await codeOf(upload.getInvocationUploadMetadata(req))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.getInvocationUploadMetadata(req, { headers: { "X-Goog-FieldMask": "nope" } }))).toBe(Code.InvalidArgument);
    const md = await upload.getInvocationUploadMetadata(req, { headers: { "X-Goog-FieldMask": "*" } });
    expect(md.name).toBe(`${name}/uploadMetadata`);
    expect(md.resumeToken).toBe(tok("start"));
    expect(await codeOf(upload.getInvocationUploadMetadata({ ...req, authorizationToken: uuid() }, { headers: { "X-Goog-FieldMask": "*" } }))).toBe(
      Code.PermissionDenied,
    );
    expect(await codeOf(upload.getInvocationUploadMetadata({ ...req, name: `invocations/${uuid()}/uploadMetadata` }, { headers: { "X-Goog-FieldMask": "*" } }))).toBe(
      Code.NotFound,
    );
  });

  it("accepts a 10 MiB batch over gRPC-web and Connect JSON, and refuses a much larger one", async () => {
    for (const client of [grpcWebClient(ResultStoreUpload), connectClient(ResultStoreUpload)]) {
      const { id, name, token, initial } = await batchInvocation();
      // 40 targets with a 256 KiB file description each: 10 MiB of payload.
      const description = "d".repeat(256 * 1024);
      const uploadRequests = Array.from({ length: 40 }, (_, i) => targetCreate(`t${i}`, { files: [{ uid: "f", description }] }));
      await client.uploadBatch({ parent: name, authorizationToken: token, resumeToken: initial, nextResumeToken: tok("big"), uploadRequests });
      expect(await resourceCount(id)).toBe(41);
      const more = Array.from({ length: 56 }, (_, i) => targetCreate(`u${i}`, { files: [{ uid: "f", description }] }));
      const err = await errorOf(client.uploadBatch({ parent: name, authorizationToken: token, resumeToken: tok("big"), nextResumeToken: tok("bigger"), uploadRequests: more }));
      expect([Code.ResourceExhausted, Code.InvalidArgument]).toContain(err.code);
      expect(await resourceCount(id)).toBe(41);
    }
  });

  it("refuses a single resource too large for storage as bad input, and applies nothing of its batch", async () => {
    const { id, name, token, initial } = await batchInvocation();
    const huge = targetCreate("huge", { files: [{ uid: "f", description: "d".repeat(2 * 1024 * 1024) }] });
    const err = await errorOf(upload.uploadBatch({ parent: name, authorizationToken: token, resumeToken: initial, nextResumeToken: tok("h"), uploadRequests: [targetCreate("ok"), huge] }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(/at most/);
    expect(await resourceCount(id)).toBe(1);
  });
});
