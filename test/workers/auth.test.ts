import { Code } from "@connectrpc/connect";
import { SELF, env } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { codeOf, connectClient, digestOf } from "./helpers.ts";

const RW = "rw-key-0123456789-0123456789abcd";
const RO = "ro-key-0123456789-0123456789abcd";


describe("API keys", () => {
  beforeAll(() => {
    env.API_KEYS = JSON.stringify([
      { key: RW, instances: [""], access: "read-write", name: "ci" },
      { key: RO, instances: ["team"], access: "read", name: "reader" },
    ]);
  });
  afterAll(() => {
    delete env.API_KEYS;
  });

  it("says so on /healthz", async () => {
    expect(await (await SELF.fetch("http://kiln/healthz")).json()).toEqual({ ok: true, auth: "keys" });
  });

  it("needs a key (UNAUTHENTICATED) and keeps keys to their scope (PERMISSION_DENIED)", async () => {
    const d = await digestOf("auth " + crypto.randomUUID());
    const req = { instanceName: "team/x", blobDigests: [d] };
    expect(await codeOf(connectClient(ContentAddressableStorage).findMissingBlobs(req))).toBe(Code.Unauthenticated);
    expect(await codeOf(connectClient(ContentAddressableStorage, { authorization: "Bearer wrong-key-123" }).findMissingBlobs(req))).toBe(Code.Unauthenticated);
    const ro = connectClient(ContentAddressableStorage, { authorization: `Bearer ${RO}` });
    expect(await codeOf(ro.findMissingBlobs(req))).toBe("ok");
    expect(await codeOf(ro.findMissingBlobs({ ...req, instanceName: "team" }))).toBe("ok");
    expect(await codeOf(ro.findMissingBlobs({ ...req, instanceName: "teammate" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(ro.batchUpdateBlobs({ instanceName: "team", requests: [] }))).toBe(Code.PermissionDenied);
    const rw = connectClient(ContentAddressableStorage, { authorization: `Bearer ${RW}` });
    expect(await codeOf(rw.batchUpdateBlobs({ instanceName: "anything", requests: [] }))).toBe("ok");
  });

  it("answers 401 and 403 on the HTTP surfaces, with basic auth accepted", async () => {
    const hash = "a".repeat(64);
    let r = await SELF.fetch(`http://kiln/cache/team/cas/${hash}`);
    expect(r.status).toBe(401);
    expect(r.headers.get("www-authenticate")).toMatch(/Basic/);
    r = await SELF.fetch(`http://kiln/cache/team/cas/${hash}`, { headers: { authorization: `Basic ${btoa("bazel:" + RO)}` } });
    expect(r.status).toBe(404);
    r = await SELF.fetch(`http://kiln/cache/team/cas/${hash}`, {
      method: "PUT",
      body: "x",
      headers: { authorization: `Bearer ${RO}`, "content-length": "1" },
    });
    expect(r.status).toBe(403);
    r = await SELF.fetch("http://kiln/v2/team/capabilities");
    expect(r.status).toBe(401);
    expect(((await r.json()) as { error: { status: string } }).error.status).toBe("UNAUTHENTICATED");
  });
});
