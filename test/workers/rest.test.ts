import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { digestOf, uniqueInstance } from "./helpers.ts";

const b64 = (s: string) => btoa(s);
const post = (path: string, body: unknown) =>
  SELF.fetch(`http://kiln${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

describe("REST (google.api.http bindings)", () => {
  it("serves capabilities for the empty and multi-segment instance names", async () => {
    for (const path of ["/v2/capabilities", "/v2/a/b/c/capabilities"]) {
      const r = await SELF.fetch(`http://kiln${path}`);
      expect(r.status).toBe(200);
      const body = (await r.json()) as { cacheCapabilities: { digestFunctions: string[] } };
      expect(body.cacheCapabilities.digestFunctions).toEqual(["SHA256"]);
    }
  });

  it("uploads, finds and reads blobs in proto3 JSON", async () => {
    const instance = uniqueInstance("rest");
    const text = "rest blob " + crypto.randomUUID();
    const d = await digestOf(text);
    const digest = { hash: d.hash, sizeBytes: String(d.sizeBytes) };
    let r = await post(`/v2/${instance}/blobs:findMissing`, { blobDigests: [digest] });
    expect(await r.json()).toEqual({ missingBlobDigests: [digest] });
    r = await post(`/v2/${instance}/blobs:batchUpdate`, { requests: [{ digest, data: b64(text) }] });
    expect(((await r.json()) as { responses: { status: object }[] }).responses[0]!.status).toEqual({});
    r = await post(`/v2/${instance}/blobs:findMissing`, { blobDigests: [digest] });
    expect(await r.json()).toEqual({});
    r = await post(`/v2/${instance}/blobs:batchRead`, { digests: [digest] });
    const read = (await r.json()) as { responses: { data: string }[] };
    expect(atob(read.responses[0]!.data)).toBe(text);
  });

  it("puts and gets action results", async () => {
    const instance = uniqueInstance("rest");
    const action = await digestOf("rest action " + crypto.randomUUID());
    const path = `/v2/${instance}/actionResults/${action.hash}/${action.sizeBytes}`;
    expect((await SELF.fetch(`http://kiln${path}`)).status).toBe(404);
    const put = await SELF.fetch(`http://kiln${path}`, { method: "PUT", body: JSON.stringify({ exitCode: 0 }) });
    expect(put.status).toBe(200);
    const got = await SELF.fetch(`http://kiln${path}`);
    expect(got.status).toBe(200);
    expect(await got.json()).toEqual({});
  });

  it("streams GetTree as a JSON array", async () => {
    const empty = { hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", size: 0 };
    const r = await SELF.fetch(`http://kiln/v2/blobs/${empty.hash}/${empty.size}:getTree`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual([{ directories: [{}] }]);
  });

  it("renders errors as googleapis JSON with the matching HTTP status, and stores nothing", async () => {
    let r = await post("/v2/x/blobs:findMissing", { blobDigests: [{ hash: "nope", sizeBytes: "1" }] });
    expect(r.status).toBe(400);
    const body = (await r.json()) as { error: { code: number; status: string; message: string; details: { "@type": string }[] } };
    expect(body.error).toMatchObject({ code: 400, status: "INVALID_ARGUMENT" });
    expect(body.error.message).toMatch(/SHA-256/);
    expect(body.error.details[0]!["@type"]).toBe("type.googleapis.com/google.rpc.BadRequest");

    r = await post("/v2/x/blobs/y/blobs:findMissing", {});
    expect(r.status).toBe(400);
    r = await SELF.fetch("http://kiln/v2/x/blobs:findMissing", { method: "POST", body: "{not json" });
    expect(r.status).toBe(400);
    r = await post("/v2/x/blobs:findMissing", { blobDigests: "wrong type" });
    expect(r.status).toBe(400);
    r = await post("/v2/x/blobs:findMissing", { noSuchField: 1 });
    expect(r.status).toBe(400);
    r = await SELF.fetch("http://kiln/v2/no/such/route");
    expect(r.status).toBe(404);
    expect(((await r.json()) as { error: { status: string } }).error.status).toBe("NOT_FOUND");
  });
});
