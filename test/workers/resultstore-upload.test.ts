// ResultStoreUpload over Connect: CreateInvocation's rules, the authorization token, children and
// their parents, Update/Merge masks, finalization, Touch, auto-finalize and DeleteInvocation.
import { Code } from "@connectrpc/connect";
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ActionSchema } from "../../src/gen/google/devtools/resultstore/v2/action_pb.ts";
import { Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { ConfigurationSchema } from "../../src/gen/google/devtools/resultstore/v2/configuration_pb.ts";
import { FileSetSchema } from "../../src/gen/google/devtools/resultstore/v2/file_set_pb.ts";
import { InvocationSchema } from "../../src/gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { TargetSchema } from "../../src/gen/google/devtools/resultstore/v2/target_pb.ts";
import { ResultStoreUpload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { codeOf, connectClient } from "./helpers.ts";
import { alarmOf, invocationStub, metaOf, newInvocation, resourceCount, stored, upload, uuid } from "./resultstore-upload-helpers.ts";

const mask = (...paths: string[]) => ({ paths });

describe("CreateInvocation", () => {
  it("answers only name and id, derives the name from the id, and ignores the request's name", async () => {
    const id = uuid();
    const inv = await upload.createInvocation({
      invocationId: id,
      invocation: { name: "invocations/something-else", statusAttributes: { status: Status.BUILDING } },
    });
    expect(inv.name).toBe(`invocations/${id}`);
    expect(inv.id?.invocationId).toBe(id);
    expect(inv.statusAttributes).toBeUndefined();
    const s = await stored(InvocationSchema, id, inv.name);
    expect(s?.name).toBe(inv.name);
    expect(s?.statusAttributes?.status).toBe(Status.BUILDING);
    expect(await metaOf(id, "upload_status")).toBe(1);
  });

  it("assigns a v4 UUID when no id is given", async () => {
    const inv = await upload.createInvocation({ invocation: {} });
    expect(inv.id?.invocationId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(inv.name).toBe(`invocations/${inv.id!.invocationId}`);
  });

  it("accepts v3, v4 and v5 UUIDs only, and refuses an existing id", async () => {
    const v3 = "6fa459ea-ee8a-3ca4-894e-db77e160355e";
    const v5 = "886313e1-3b8a-5372-9b90-0c9aee199e5d";
    // Fresh random v3/v5-shaped ids so reruns against persisted state do not collide.
    const fresh = (v: string, tpl: string) => tpl.slice(0, 14) + v + uuid().slice(15);
    expect(await codeOf(upload.createInvocation({ invocationId: fresh("3", v3), invocation: {} }))).toBe("ok");
    expect(await codeOf(upload.createInvocation({ invocationId: fresh("5", v5), invocation: {} }))).toBe("ok");
    const v1 = "c232ab00-9414-11ec-b3c8-9f6bdeced846";
    expect(await codeOf(upload.createInvocation({ invocationId: v1, invocation: {} }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createInvocation({ invocationId: "build-42", invocation: {} }))).toBe(Code.InvalidArgument);
    const { id } = await newInvocation();
    expect(await codeOf(upload.createInvocation({ invocationId: id, invocation: {} }))).toBe(Code.AlreadyExists);
    expect(await codeOf(upload.createInvocation({ invocationId: uuid() }))).toBe(Code.InvalidArgument); // invocation is required
  });

  it("replays a request_id: the same answer, nothing changed; another request id is ALREADY_EXISTS", async () => {
    const id = uuid();
    const requestId = uuid();
    const first = await upload.createInvocation({ requestId, invocationId: id, invocation: { statusAttributes: { status: Status.BUILDING } } });
    const again = await upload.createInvocation({ requestId, invocationId: id, invocation: { statusAttributes: { status: Status.FAILED } } });
    expect(again.name).toBe(first.name);
    expect((await stored(InvocationSchema, id, first.name))?.statusAttributes?.status).toBe(Status.BUILDING);
    expect(await codeOf(upload.createInvocation({ requestId: uuid(), invocationId: id, invocation: {} }))).toBe(Code.AlreadyExists);
  });

  it("checks request_id: at most 36 characters, needs invocation_id, not with initial_resume_token", async () => {
    expect(await codeOf(upload.createInvocation({ requestId: "x".repeat(37), invocationId: uuid(), invocation: {} }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createInvocation({ requestId: "é".repeat(36), invocationId: uuid(), invocation: {} }))).toBe("ok");
    expect(await codeOf(upload.createInvocation({ requestId: uuid(), invocation: {} }))).toBe(Code.InvalidArgument);
    expect(
      await codeOf(upload.createInvocation({ requestId: uuid(), invocationId: uuid(), initialResumeToken: "AAAA", invocation: {} })),
    ).toBe(Code.InvalidArgument);
  });

  it("needs an RFC 4122 v3/v4/v5 authorization_token", async () => {
    expect(await codeOf(upload.createInvocation({ invocationId: uuid(), authorizationToken: "secret", invocation: {} }))).toBe(Code.InvalidArgument);
    expect(
      await codeOf(upload.createInvocation({ invocationId: uuid(), authorizationToken: "c232ab00-9414-11ec-b3c8-9f6bdeced846", invocation: {} })),
    ).toBe(Code.InvalidArgument);
  });
});

describe("the authorization token", () => {
  it("must be presented, exactly, on every later upload RPC of the invocation and its children", async () => {
    const { name, token } = await newInvocation();
    const wrong = uuid();
    expect(await codeOf(upload.touchInvocation({ name }))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.touchInvocation({ name, authorizationToken: wrong }))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.touchInvocation({ name, authorizationToken: token.toUpperCase() }))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.touchInvocation({ name, authorizationToken: token }))).toBe("ok");
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "//a", target: {}, authorizationToken: wrong }))).toBe(Code.PermissionDenied);
    await upload.createTarget({ parent: name, targetId: "//a", target: {}, authorizationToken: token });
    const target = `${name}/targets/${encodeURIComponent("//a")}`;
    const update = { target: { name: target }, updateMask: mask("status_attributes"), authorizationToken: wrong };
    expect(await codeOf(upload.updateTarget(update))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.finalizeTarget({ name: target }))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.finalizeInvocation({ name, authorizationToken: wrong }))).toBe(Code.PermissionDenied);
    expect(await codeOf(upload.getInvocationUploadMetadata({ name: `${name}/uploadMetadata`, authorizationToken: wrong }))).not.toBe("ok");
    expect(await codeOf(upload.updateTarget({ ...update, authorizationToken: token }))).toBe("ok");
  });

  it("is not asked for when the invocation was created without one", async () => {
    const inv = await upload.createInvocation({ invocationId: uuid(), invocation: {} });
    expect(await codeOf(upload.touchInvocation({ name: inv.name }))).toBe("ok");
  });
});

describe("children", () => {
  it("are created under existing parents with url-encoded ids, once each, with request_id replay", async () => {
    const { id, name, token } = await newInvocation();
    const t = { authorizationToken: token };
    const target = await upload.createTarget({ parent: name, targetId: "//pkg:lib", target: {}, ...t });
    expect(target.name).toBe(`${name}/targets/%2F%2Fpkg%3Alib`);
    expect(target.id).toMatchObject({ invocationId: id, targetId: "//pkg:lib" });
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "//pkg:lib", target: {}, ...t }))).toBe(Code.AlreadyExists);
    // A configured target needs its configuration; an action its configured target.
    expect(await codeOf(upload.createConfiguredTarget({ parent: target.name, configId: "k8", configuredTarget: {}, ...t }))).toBe(Code.NotFound);
    const config = await upload.createConfiguration({ parent: name, configId: "k8", configuration: {}, ...t });
    expect(config.name).toBe(`${name}/configs/k8`);
    const ct = await upload.createConfiguredTarget({ parent: target.name, configId: "k8", configuredTarget: {}, ...t });
    expect(ct.name).toBe(`${target.name}/configuredTargets/k8`);
    expect(await codeOf(upload.createAction({ parent: `${target.name}/configuredTargets/other`, actionId: "build", action: {}, ...t }))).toBe(
      Code.NotFound,
    );
    const requestId = uuid();
    const action = await upload.createAction({ requestId, parent: ct.name, actionId: "build", action: { actionType: { case: "buildAction", value: {} } }, ...t });
    expect(action.name).toBe(`${ct.name}/actions/build`);
    expect(action.id).toMatchObject({ invocationId: id, targetId: "//pkg:lib", configurationId: "k8", actionId: "build" });
    const replay = await upload.createAction({ requestId, parent: ct.name, actionId: "build", action: {}, ...t });
    expect(replay.name).toBe(action.name);
    expect((await stored(ActionSchema, id, action.name))?.actionType.case).toBe("buildAction");
    expect(await codeOf(upload.createAction({ requestId: uuid(), parent: ct.name, actionId: "build", action: {}, ...t }))).toBe(Code.AlreadyExists);
    const fs = await upload.createFileSet({ parent: name, fileSetId: "outputs", fileSet: {}, ...t });
    expect(fs.name).toBe(`${name}/fileSets/outputs`);
    expect(await resourceCount(id)).toBe(6);
    expect(await codeOf(upload.createTarget({ parent: `invocations/${uuid()}`, targetId: "x", target: {} }))).toBe(Code.NotFound);
  });

  it("refuses missing, reserved and malformed ids and names", async () => {
    const { name, token } = await newInvocation();
    const t = { authorizationToken: token };
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "", target: {}, ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "-", target: {}, ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "x", ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createConfiguration({ parent: name, configId: "a b", configuration: {}, ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createFileSet({ parent: `${name}/targets/x`, fileSetId: "f", fileSet: {}, ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createTarget({ parent: "invocations/not-a-uuid", targetId: "x", target: {}, ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.createTarget({ requestId: "r".repeat(37), parent: name, targetId: "x", target: {}, ...t }))).toBe(
      Code.InvalidArgument,
    );
  });
});

describe("Update and Merge", () => {
  it("need a valid update_mask that does not touch name or id", async () => {
    const { name, token } = await newInvocation();
    const t = { authorizationToken: token };
    expect(await codeOf(upload.updateInvocation({ invocation: { name }, ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.mergeInvocation({ invocation: { name }, updateMask: mask(), ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.updateInvocation({ invocation: { name }, updateMask: mask("no_such_field"), ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.updateInvocation({ invocation: { name }, updateMask: mask("name"), ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.updateInvocation({ invocation: { name }, updateMask: mask("files.uid"), ...t }))).toBe(Code.InvalidArgument);
    expect(await codeOf(upload.updateInvocation({ invocation: { name: `invocations/${uuid()}` }, updateMask: mask("timing"), ...t }))).toBe(
      Code.NotFound,
    );
  });

  it("keep invocation_attributes.project_id as created (IMMUTABLE): left out it stays, another project is INVALID_ARGUMENT", async () => {
    const { id, name, token } = await newInvocation({ invocation: { invocationAttributes: { projectId: "proj-a", users: ["u0"] } } });
    const t = { authorizationToken: token };
    const projectOf = async () => (await stored(InvocationSchema, id, name))?.invocationAttributes?.projectId;
    await upload.updateInvocation({ invocation: { name, invocationAttributes: { users: ["u1"] } }, updateMask: mask("invocation_attributes"), ...t });
    expect(await projectOf()).toBe("proj-a");
    expect((await stored(InvocationSchema, id, name))?.invocationAttributes?.users).toEqual(["u1"]);
    await upload.updateInvocation({ invocation: { name }, updateMask: mask("invocation_attributes"), ...t });
    expect(await projectOf()).toBe("proj-a");
    for (const paths of [["invocation_attributes"], ["invocation_attributes.project_id"]]) {
      const e = await codeOf(upload.updateInvocation({ invocation: { name, invocationAttributes: { projectId: "proj-b" } }, updateMask: mask(...paths), ...t }));
      expect(e, paths.join()).toBe(Code.InvalidArgument);
    }
    expect(await codeOf(upload.mergeInvocation({ invocation: { name, invocationAttributes: { projectId: "proj-b" } }, updateMask: mask("invocation_attributes.project_id"), ...t }))).toBe(Code.InvalidArgument);
    expect(await projectOf()).toBe("proj-a");
    // Sending it unchanged is no change.
    await upload.updateInvocation({ invocation: { name, invocationAttributes: { projectId: "proj-a" } }, updateMask: mask("invocation_attributes.project_id"), ...t });
    expect(await projectOf()).toBe("proj-a");
  });

  it("Update replaces and clears the fields under the mask; Merge appends repeated fields", async () => {
    const { id, name, token } = await newInvocation({
      invocation: {
        statusAttributes: { status: Status.BUILDING, description: "starting" },
        invocationAttributes: { labels: ["a"], users: ["u1"] },
        properties: [{ key: "k1", value: "v1" }],
      },
    });
    const t = { authorizationToken: token };
    const get = () => stored(InvocationSchema, id, name);
    // Replace one nested field; leave its sibling alone.
    await upload.updateInvocation({ invocation: { name, statusAttributes: { status: Status.TESTING } }, updateMask: mask("status_attributes.status"), ...t });
    expect((await get())?.statusAttributes).toMatchObject({ status: Status.TESTING, description: "starting" });
    // A masked field the request leaves unset is cleared.
    await upload.updateInvocation({ invocation: { name }, updateMask: mask("status_attributes.description"), ...t });
    expect((await get())?.statusAttributes).toMatchObject({ status: Status.TESTING, description: "" });
    // Update of a repeated field replaces it.
    await upload.updateInvocation({ invocation: { name, invocationAttributes: { labels: ["b"] } }, updateMask: mask("invocation_attributes.labels"), ...t });
    expect((await get())?.invocationAttributes?.labels).toEqual(["b"]);
    expect((await get())?.invocationAttributes?.users).toEqual(["u1"]);
    // Merge appends.
    const requestId = uuid();
    const merge = { requestId, invocation: { name, invocationAttributes: { labels: ["c"] }, properties: [{ key: "k2", value: "v2" }] }, ...t };
    await upload.mergeInvocation({ ...merge, updateMask: mask("invocation_attributes.labels", "properties") });
    expect((await get())?.invocationAttributes?.labels).toEqual(["b", "c"]);
    expect((await get())?.properties.map((p) => p.key)).toEqual(["k1", "k2"]);
    // The same request id again is ignored (Merge is not idempotent by itself).
    await upload.mergeInvocation({ ...merge, updateMask: mask("invocation_attributes.labels", "properties") });
    expect((await get())?.invocationAttributes?.labels).toEqual(["b", "c"]);
    // Update of a whole message with an unset value clears it; name and id stay.
    await upload.updateInvocation({ invocation: { name }, updateMask: mask("invocation_attributes", "properties"), ...t });
    const s = await get();
    expect(s?.invocationAttributes).toBeUndefined();
    expect(s?.properties).toEqual([]);
    expect(s?.name).toBe(name);
    expect(s?.id?.invocationId).toBe(id);
  });

  it("switches a oneof through a nested path, and create_if_not_found creates", async () => {
    const { id, name, token } = await newInvocation();
    const t = { authorizationToken: token };
    await upload.createTarget({ parent: name, targetId: "t", target: {}, ...t });
    await upload.createConfiguration({ parent: name, configId: "c", configuration: {}, ...t });
    await upload.createConfiguredTarget({ parent: `${name}/targets/t`, configId: "c", configuredTarget: {}, ...t });
    const actionName = `${name}/targets/t/configuredTargets/c/actions/test`;
    const action = { name: actionName, actionType: { case: "testAction" as const, value: { testSuite: { suiteName: "s" } } } };
    expect(await codeOf(upload.updateAction({ action, updateMask: mask("test_action.test_suite"), ...t }))).toBe(Code.NotFound);
    await upload.updateAction({ action, updateMask: mask("test_action.test_suite"), createIfNotFound: true, ...t });
    expect((await stored(ActionSchema, id, actionName))?.actionType).toMatchObject({ case: "testAction", value: { testSuite: { suiteName: "s" } } });
    await upload.updateAction({ action: { name: actionName, actionType: { case: "buildAction" as const, value: { type: "javac" } } }, updateMask: mask("build_action"), ...t });
    expect((await stored(ActionSchema, id, actionName))?.actionType).toMatchObject({ case: "buildAction", value: { type: "javac" } });
    const target = `${name}/targets/t2`;
    await upload.mergeTarget({ target: { name: target, files: [{ uid: "log" }] }, updateMask: mask("files"), createIfNotFound: true, ...t });
    await upload.mergeTarget({ target: { name: target, files: [{ uid: "log2" }] }, updateMask: mask("files"), ...t });
    expect((await stored(TargetSchema, id, target))?.files.map((f) => f.uid)).toEqual(["log", "log2"]);
  });
});

describe("file sets and configurations", () => {
  it("take Update and Merge like the others", async () => {
    const { id, name, token } = await newInvocation();
    const t = { authorizationToken: token };
    const fs = (await upload.createFileSet({ parent: name, fileSetId: "outs", fileSet: { files: [{ uid: "a" }] }, ...t })).name;
    await upload.mergeFileSet({ fileSet: { name: fs, files: [{ uid: "b" }] }, updateMask: mask("files"), ...t });
    expect((await stored(FileSetSchema, id, fs))?.files.map((f) => f.uid)).toEqual(["a", "b"]);
    await upload.updateFileSet({ fileSet: { name: fs, files: [{ uid: "c" }] }, updateMask: mask("files"), ...t });
    expect((await stored(FileSetSchema, id, fs))?.files.map((f) => f.uid)).toEqual(["c"]);
    const cfg = `${name}/configs/new`;
    await upload.updateConfiguration({ configuration: { name: cfg, statusAttributes: { status: Status.BUILT } }, updateMask: mask("status_attributes"), createIfNotFound: true, ...t });
    expect((await stored(ConfigurationSchema, id, cfg))?.statusAttributes?.status).toBe(Status.BUILT);
  });
});

describe("finalization", () => {
  it("makes a resource and everything under it refuse changes; Finalize is idempotent", async () => {
    const { name, token } = await newInvocation();
    const t = { authorizationToken: token };
    const target = (await upload.createTarget({ parent: name, targetId: "t", target: {}, ...t })).name;
    await upload.createConfiguration({ parent: name, configId: "c", configuration: {}, ...t });
    const ct = (await upload.createConfiguredTarget({ parent: target, configId: "c", configuredTarget: {}, ...t })).name;
    const fin = await upload.finalizeConfiguredTarget({ name: ct, ...t });
    expect(fin.name).toBe(ct);
    expect(await codeOf(upload.finalizeConfiguredTarget({ name: ct, ...t }))).toBe("ok");
    expect(await codeOf(upload.createAction({ parent: ct, actionId: "a", action: {}, ...t }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.updateConfiguredTarget({ configuredTarget: { name: ct }, updateMask: mask("timing"), ...t }))).toBe(
      Code.FailedPrecondition,
    );
    await upload.finalizeTarget({ name: target, ...t });
    expect(await codeOf(upload.mergeTarget({ target: { name: target }, updateMask: mask("files"), ...t }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.createConfiguredTarget({ parent: target, configId: "c", configuredTarget: {}, ...t }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.finalizeTarget({ name: `${name}/targets/none`, ...t }))).toBe(Code.NotFound);
    // Finalizing the invocation closes everything.
    const res = await upload.finalizeInvocation({ name, ...t });
    expect(res.name).toBe(name);
    expect(await codeOf(upload.finalizeInvocation({ name, ...t }))).toBe("ok");
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "t2", target: {}, ...t }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.updateInvocation({ invocation: { name }, updateMask: mask("timing"), ...t }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(upload.updateConfiguration({ configuration: { name: `${name}/configs/c` }, updateMask: mask("status_attributes"), ...t }))).toBe(
      Code.FailedPrecondition,
    );
    expect(await codeOf(upload.touchInvocation({ name, ...t }))).toBe(Code.FailedPrecondition);
  });

  it("moves the upload status UPLOADING -> POST_PROCESSING -> IMMUTABLE", async () => {
    const { id, name, token } = await newInvocation();
    expect(await metaOf(id, "upload_status")).toBe(1);
    await upload.finalizeInvocation({ name, authorizationToken: token });
    const status = await metaOf(id, "upload_status");
    expect([2, 3]).toContain(status); // the alarm may already have run
    await runDurableObjectAlarm(invocationStub(id));
    expect(await metaOf(id, "upload_status")).toBe(3);
  });
});

describe("auto-finalize", () => {
  it("finalizes at auto_finalize_time", async () => {
    const at = Date.now() + 1500;
    const { id, name, token } = await newInvocation({ autoFinalizeTime: { seconds: BigInt(Math.floor(at / 1000)), nanos: (at % 1000) * 1e6 } });
    expect(await alarmOf(id)).toBe(at);
    // Early: the alarm changes nothing (and re-arms).
    await runDurableObjectAlarm(invocationStub(id));
    expect(await metaOf(id, "upload_status")).toBe(1);
    // Past the time, the alarm (by itself, or run here) finalizes it.
    await new Promise((r) => setTimeout(r, at - Date.now() + 50));
    await runDurableObjectAlarm(invocationStub(id));
    expect([2, 3]).toContain(await metaOf(id, "upload_status"));
    expect(await codeOf(upload.createTarget({ parent: name, targetId: "late", target: {}, authorizationToken: token }))).toBe(Code.FailedPrecondition);
  });

  it("by default after 24 h without modification, and Touch (or any change) restarts the clock", async () => {
    const { id, name, token } = await newInvocation();
    const first = (await alarmOf(id))!;
    const created = Number(await metaOf(id, "last_modified"));
    expect(first).toBe(created + 86_400_000);
    await new Promise((r) => setTimeout(r, 20));
    await upload.touchInvocation({ name, authorizationToken: token });
    expect(await alarmOf(id)).toBe(Number(await metaOf(id, "last_modified")) + 86_400_000);
    expect((await alarmOf(id))!).toBeGreaterThan(first);
    // Idle for longer than that: pretend the last change was a day ago, then the alarm fires.
    await runInDurableObject(invocationStub(id), (_o, state) => {
      state.storage.sql.exec(`UPDATE meta SET v = ? WHERE k = 'last_modified'`, Date.now() - 86_400_001);
    });
    await runDurableObjectAlarm(invocationStub(id));
    expect([2, 3]).toContain(await metaOf(id, "upload_status"));
  });
});

describe("DeleteInvocation", () => {
  it("deletes only finalized invocations, and then they are gone", async () => {
    const { id, name, token } = await newInvocation();
    await upload.createTarget({ parent: name, targetId: "t", target: {}, authorizationToken: token });
    expect(await codeOf(upload.deleteInvocation({ name }))).toBe(Code.FailedPrecondition);
    await upload.finalizeInvocation({ name, authorizationToken: token });
    await upload.deleteInvocation({ name });
    expect(await resourceCount(id)).toBe(0);
    expect(await codeOf(upload.touchInvocation({ name, authorizationToken: token }))).toBe(Code.NotFound);
    expect(await codeOf(upload.deleteInvocation({ name }))).toBe(Code.NotFound);
    expect(await codeOf(upload.deleteInvocation({ name: `invocations/${uuid()}` }))).toBe(Code.NotFound);
    // The id is free again.
    expect(await codeOf(upload.createInvocation({ invocationId: id, invocation: {} }))).toBe("ok");
  });
});

describe("DeleteInvocation racing other calls", () => {
  it("never wipes an invocation created again while an earlier call still finished the deletion", async () => {
    const { id, name, token } = await newInvocation();
    await upload.finalizeInvocation({ name, authorizationToken: token });
    const stub = invocationStub(id);
    // A slow D1: each removal of the invocation's index rows takes 1.5 s, wide enough windows for
    // the calls below to land inside each other on a loaded machine.
    await runInDurableObject(stub, (o) => {
      const sync = (o as unknown as { index: { db: D1Database } }).index;
      const real = sync.db;
      sync.db = {
        prepare: (q: string) => real.prepare(q),
        batch: (s: D1PreparedStatement[]) => new Promise((r) => setTimeout(r, 1500)).then(() => real.batch(s)),
      } as unknown as D1Database;
    });
    const deleting = upload.deleteInvocation({ name });
    // The deletion has started (its marker is set) and is waiting for D1.
    for (let i = 0; i < 300 && (await metaOf(id, "deleting")) === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    // This call finds the deletion unfinished and finishes it too (its removal runs after the first).
    const touching = codeOf(upload.touchInvocation({ name, authorizationToken: token }));
    await deleting;
    // Deleted: the id is free, and a new invocation (without a token) takes it while the touch
    // still waits for D1; the touch then finds and touches that one.
    await upload.createInvocation({ invocationId: id, invocation: {} });
    expect(await touching).toBe("ok");
    expect(await resourceCount(id)).toBe(1);
    expect(await metaOf(id, "upload_status")).toBe(1);
  });
});

describe("DeleteInvocation when D1 fails", () => {
  it("is gone at once, refuses uploads (UNAVAILABLE) until the alarm removed the index rows, then frees the id", async () => {
    const { id, name, token } = await newInvocation();
    await upload.createTarget({ parent: name, targetId: "t", target: {}, authorizationToken: token });
    await upload.finalizeInvocation({ name, authorizationToken: token });
    const stub = invocationStub(id);
    type Sync = { db: D1Database; realDb?: D1Database };
    await runInDurableObject(stub, (o) => {
      const sync = (o as unknown as { index: Sync }).index;
      sync.realDb = sync.db;
      sync.db = { prepare: (q: string) => sync.realDb!.prepare(q), batch: () => Promise.reject(new Error("D1 is down (test)")) } as unknown as D1Database;
    });
    await upload.deleteInvocation({ name });
    expect(await resourceCount(id)).toBe(0);
    expect((await alarmOf(id))!).toBeLessThanOrEqual(Date.now() + 10_000);
    const indexed = () => env.INDEX.prepare(`SELECT count(*) AS n FROM rs_targets WHERE tenant = 'default' AND invocation_id = ?`).bind(id).first<number>("n");
    expect(await indexed()).toBe(1);
    expect(await codeOf(upload.createInvocation({ invocationId: id, invocation: {} }))).toBe(Code.Unavailable);
    await runInDurableObject(stub, (o) => {
      const sync = (o as unknown as { index: Sync }).index;
      sync.db = sync.realDb!;
    });
    await runDurableObjectAlarm(stub);
    expect(await indexed()).toBe(0);
    expect(await metaOf(id, "deleting")).toBeUndefined();
    expect(await alarmOf(id)).toBeNull();
    expect(await codeOf(upload.createInvocation({ invocationId: id, invocation: {} }))).toBe("ok");
  });
});

describe("API keys and tenants", () => {
  const RW = "rs-rw-key-0123456789-0123456789a";
  const RO = "rs-ro-key-0123456789-0123456789a";
  const OTHER = "rs-other-key-0123456789-01234567";

  it("need a key, read-write for uploads, and keep each tenant's invocations apart", async () => {
    env.API_KEYS = JSON.stringify([
      // Instance prefixes do not apply to ResultStore: "team" does not limit this key.
      { key: RW, instances: ["team"], access: "read-write", tenant: "acme" },
      { key: RO, access: "read", tenant: "acme" },
      { key: OTHER, access: "read-write", tenant: "globex" },
    ]);
    try {
      const id = uuid();
      const req = { invocationId: id, invocation: {} };
      expect(await codeOf(upload.createInvocation(req))).toBe(Code.Unauthenticated);
      expect(await codeOf(connectClient(ResultStoreUpload, { authorization: `Bearer ${RO}` }).createInvocation(req))).toBe(Code.PermissionDenied);
      const acme = connectClient(ResultStoreUpload, { authorization: `Bearer ${RW}` });
      const globex = connectClient(ResultStoreUpload, { authorization: `Bearer ${OTHER}` });
      expect(await codeOf(acme.createInvocation(req))).toBe("ok");
      // The same id in another tenant is another invocation.
      expect(await codeOf(globex.touchInvocation({ name: `invocations/${id}` }))).toBe(Code.NotFound);
      expect(await codeOf(globex.createInvocation(req))).toBe("ok");
      expect(await codeOf(acme.createInvocation(req))).toBe(Code.AlreadyExists);
      const tenantOf = (t: string) =>
        runInDurableObject(invocationStub(id, t), (_o, state) => state.storage.sql.exec<{ v: string }>(`SELECT v FROM meta WHERE k = 'tenant'`).one().v);
      expect(await tenantOf("acme")).toBe("acme");
      expect(await tenantOf("globex")).toBe("globex");
    } finally {
      delete env.API_KEYS;
    }
  });
});

describe("the search index", () => {
  it("is written through after every change: nothing stays queued", async () => {
    const { id, name, token } = await newInvocation();
    await upload.createTarget({ parent: name, targetId: "t", target: {}, authorizationToken: token });
    await upload.finalizeInvocation({ name, authorizationToken: token });
    const queued = await runInDurableObject(invocationStub(id), (_o, state) =>
      state.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM index_pending`).one().n,
    );
    expect(queued).toBe(0);
  });

  it("answers the upload when D1 fails, keeps the change queued with an alarm soon, and the alarm writes it", async () => {
    const { id, name, token } = await newInvocation();
    const stub = invocationStub(id);
    type Sync = { db: D1Database; realDb?: D1Database };
    await runInDurableObject(stub, (o) => {
      const sync = (o as unknown as { index: Sync }).index;
      sync.realDb = sync.db;
      sync.db = { prepare: (q: string) => sync.realDb!.prepare(q), batch: () => Promise.reject(new Error("D1 is down (test)")) } as unknown as D1Database;
    });
    await upload.createTarget({ parent: name, targetId: "t", target: {}, authorizationToken: token });
    const queued = () => runInDurableObject(stub, (_o, state) => state.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM index_pending`).one().n);
    expect(await queued()).toBe(1);
    // The retry comes long before the 24 h auto-finalize.
    expect((await alarmOf(id))!).toBeLessThanOrEqual(Date.now() + 10_000);
    const indexed = () => env.INDEX.prepare(`SELECT count(*) AS n FROM rs_targets WHERE tenant = 'default' AND name = ?`).bind(`${name}/targets/t`).first<number>("n");
    expect(await indexed()).toBe(0);
    await runInDurableObject(stub, (o) => {
      const sync = (o as unknown as { index: Sync }).index;
      sync.db = sync.realDb!;
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await queued()).toBe(0);
    expect(await indexed()).toBe(1);
    expect((await alarmOf(id))!).toBeGreaterThan(Date.now() + 86_000_000);
  });

  it("keeps what it could not write queued, and the alarm writes it", async () => {
    const { id, name } = await newInvocation();
    const stub = invocationStub(id);
    // As if a write to D1 had failed: the change is still queued.
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec(`INSERT INTO index_pending (name, kind, ver) VALUES (?, 'invocation', 1000000)`, name);
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const queued = await runInDurableObject(stub, (_o, state) => state.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM index_pending`).one().n);
    expect(queued).toBe(0);
    // Not due yet: the invocation is still open, and the alarm is armed again for auto-finalize.
    expect(await metaOf(id, "upload_status")).toBe(1);
    expect(await alarmOf(id)).not.toBeNull();
  });
});
