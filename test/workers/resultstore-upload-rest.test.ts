// ResultStoreUpload over the REST bindings of the proto (google.api.http): path, query and body
// binding, url-encoded ids inside names, googleapis JSON errors with their HTTP statuses.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { TargetSchema } from "../../src/gen/google/devtools/resultstore/v2/target_pb.ts";
import { metaOf, resourceCount, stored, uuid } from "./resultstore-upload-helpers.ts";

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
  SELF.fetch(`http://kiln${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

const errorOf = async (r: Response) => ((await r.json()) as { error: { code: number; status: string; message: string } }).error;

describe("ResultStoreUpload over REST", () => {
  it("runs an upload end to end: create, children, update, merge, finalize, delete", async () => {
    const id = uuid();
    const token = uuid();
    const q = `authorizationToken=${token}`;
    let r = await call("POST", `/v2/invocations?invocationId=${id}&authorization_token=${token}&requestId=r1`, { statusAttributes: { status: "BUILDING" } });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ name: `invocations/${id}`, id: { invocationId: id } });
    // Replay with the same request id answers the same; another request id is 409.
    r = await call("POST", `/v2/invocations?invocationId=${id}&requestId=r1`, {});
    expect(r.status).toBe(200);
    r = await call("POST", `/v2/invocations?invocationId=${id}&requestId=r2`, {});
    expect(r.status).toBe(409);
    expect((await errorOf(r)).status).toBe("ALREADY_EXISTS");
    // Query parameters also go by their proto (snake_case) names; a bad token is 400.
    const other = uuid();
    r = await call("POST", `/v2/invocations?invocation_id=${other}&request_id=s1&auto_finalize_time=2099-01-01T00:00:00Z`, {});
    expect(await r.json()).toEqual({ name: `invocations/${other}`, id: { invocationId: other } });
    expect(await metaOf(other, "auto_finalize_at")).toBe(Date.parse("2099-01-01T00:00:00Z"));
    r = await call("POST", `/v2/invocations?invocation_id=${uuid()}&authorization_token=not-a-uuid`, {});
    expect(r.status).toBe(400);
    expect((await errorOf(r)).status).toBe("INVALID_ARGUMENT");

    // A target id with slashes and a colon travels url-encoded inside the name.
    r = await call("POST", `/v2/invocations/${id}/targets?targetId=${encodeURIComponent("//pkg:t")}&${q}`, {});
    expect(await r.json()).toEqual({ name: `invocations/${id}/targets/%2F%2Fpkg%3At`, id: { invocationId: id, targetId: "//pkg:t" } });
    const target = `invocations/${id}/targets/%2F%2Fpkg%3At`;
    r = await call("POST", `/v2/invocations/${id}/targets?targetId=x`, {});
    expect(r.status).toBe(403);
    expect((await errorOf(r)).status).toBe("PERMISSION_DENIED");

    // Update: body is the target, the mask and token come from the query.
    r = await call("PATCH", `/v2/${target}?updateMask=statusAttributes.status&${q}`, { statusAttributes: { status: "BUILT" } });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ name: target, id: { invocationId: id, targetId: "//pkg:t" } });
    r = await call("PATCH", `/v2/${target}?${q}`, { statusAttributes: { status: "BUILT" } });
    expect(r.status).toBe(400);
    // Merge: body "*" carries everything.
    r = await call("POST", `/v2/${target}:merge`, { target: { files: [{ uid: "log" }] }, updateMask: "files", authorizationToken: token, requestId: "m1" });
    expect(r.status).toBe(200);
    const t = await stored(TargetSchema, id, target);
    expect(t?.statusAttributes?.status).toBe(Status.BUILT);
    expect(t?.files.map((f) => f.uid)).toEqual(["log"]);

    r = await call("POST", `/v2/invocations/${id}/configs?configId=c&${q}`, {});
    expect(r.status).toBe(200);
    r = await call("POST", `/v2/${target}/configuredTargets?configId=c&${q}`, {});
    expect(r.status).toBe(200);
    r = await call("POST", `/v2/${target}/configuredTargets/c/actions?actionId=build&${q}`, { buildAction: {} });
    expect(await r.json()).toEqual({
      name: `${target}/configuredTargets/c/actions/build`,
      id: { invocationId: id, targetId: "//pkg:t", configurationId: "c", actionId: "build" },
    });
    r = await call("POST", `/v2/invocations/${id}/fileSets?fileSetId=fs&${q}`, {});
    expect(r.status).toBe(200);
    r = await call("POST", `/v2/${target}/configuredTargets/c:finalize`, { authorizationToken: token });
    expect(r.status).toBe(200);
    r = await call("POST", `/v2/${target}:finalize`, { authorizationToken: token });
    expect(await r.json()).toEqual({ name: target, id: { invocationId: id, targetId: "//pkg:t" } });
    r = await call("POST", `/v2/invocations/${id}:touch`, { authorizationToken: token });
    expect(r.status).toBe(200);
    expect(await resourceCount(id)).toBe(6);

    r = await call("DELETE", `/v2/invocations/${id}`);
    expect(r.status).toBe(400);
    expect((await errorOf(r)).status).toBe("FAILED_PRECONDITION");
    r = await call("POST", `/v2/invocations/${id}:finalize`, { authorizationToken: token });
    expect(await r.json()).toEqual({ name: `invocations/${id}`, id: { invocationId: id } });
    r = await call("PATCH", `/v2/${target}?updateMask=timing&${q}`, {});
    expect(r.status).toBe(400);
    expect((await errorOf(r)).status).toBe("FAILED_PRECONDITION");
    r = await call("DELETE", `/v2/invocations/${id}`);
    expect(r.status).toBe(200);
    r = await call("POST", `/v2/invocations/${id}:touch`, { authorizationToken: token });
    expect(r.status).toBe(404);
  });

  it("uploads batches and reads the upload metadata with the fields parameter", async () => {
    const id = uuid();
    const token = uuid();
    let r = await call("POST", `/v2/invocations?invocationId=${id}&authorizationToken=${token}&initialResumeToken=AAAA&uploaderState=${btoa("s0")}`, {});
    expect(r.status).toBe(200);
    const batch = {
      authorizationToken: token,
      resumeToken: "AAAA",
      nextResumeToken: "AAAB",
      uploaderState: btoa("s1"),
      uploadRequests: [{ id: { targetId: "t" }, uploadOperation: "CREATE", target: {} }],
    };
    r = await call("POST", `/v2/invocations/${id}/batch:upload`, batch);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({});
    r = await call("POST", `/v2/invocations/${id}/batch:upload`, batch);
    expect(r.status).toBe(200);
    r = await call("POST", `/v2/invocations/${id}/batch:upload`, { ...batch, nextResumeToken: "AAAC" });
    expect(r.status).toBe(409);
    expect((await errorOf(r)).status).toBe("ABORTED");
    r = await SELF.fetch(`http://kiln/v2/invocations/${id}/uploadMetadata?authorizationToken=${token}&fields=resumeToken,uploaderState`);
    expect(await r.json()).toEqual({ resumeToken: "AAAB", uploaderState: btoa("s1") });
    r = await SELF.fetch(`http://kiln/v2/invocations/${id}/uploadMetadata?authorizationToken=${token}`);
    expect(r.status).toBe(400);
    expect(await resourceCount(id)).toBe(2);
  });

  it("accepts a 10 MiB UploadBatch as JSON", async () => {
    const id = uuid();
    const token = uuid();
    await call("POST", `/v2/invocations?invocationId=${id}&authorizationToken=${token}&initialResumeToken=AAAA`, {});
    const description = "d".repeat(64 * 1024);
    const uploadRequests = Array.from({ length: 160 }, (_, i) => ({ id: { targetId: `t${i}` }, uploadOperation: "CREATE", target: { files: [{ uid: "f", description }] } }));
    const r = await call("POST", `/v2/invocations/${id}/batch:upload`, { authorizationToken: token, resumeToken: "AAAA", nextResumeToken: "AAAB", uploadRequests });
    expect(r.status).toBe(200);
    expect(await resourceCount(id)).toBe(161);
  });
});
