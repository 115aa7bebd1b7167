import { create, toBinary } from "@bufbuild/protobuf";
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ActionResultSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { EMPTY_SHA256 } from "../../src/storage/digest.ts";
import { casHolds, pseudoRandom, sha256Hex, uniqueInstance } from "./helpers.ts";

const url = (p: string) => `http://kiln/cache/${p}`;
const put = (p: string, body: Uint8Array, headers: Record<string, string> = {}) =>
  SELF.fetch(url(p), { method: "PUT", body, headers: { "content-length": String(body.byteLength), ...headers } });

describe("Bazel HTTP cache", () => {
  it("stores and serves CAS blobs, with HEAD and ranges", async () => {
    const data = pseudoRandom(100_000, 21);
    const hash = await sha256Hex(data);
    expect((await SELF.fetch(url(`main/cas/${hash}`))).status).toBe(404);
    expect((await put(`main/cas/${hash}`, data, { expect: "100-continue" })).status).toBe(200);
    const got = await SELF.fetch(url(`main/cas/${hash}`));
    expect(got.status).toBe(200);
    expect(await sha256Hex(new Uint8Array(await got.arrayBuffer()))).toBe(hash);
    const head = await SELF.fetch(url(`main/cas/${hash}`), { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe("100000");
    const range = await SELF.fetch(url(`main/cas/${hash}`), { headers: { range: "bytes=10-19" } });
    expect(range.status).toBe(206);
    expect(range.headers.get("content-range")).toBe("bytes 10-19/100000");
    expect(new Uint8Array(await range.arrayBuffer())).toEqual(data.subarray(10, 20));
    expect((await SELF.fetch(url(`main/cas/${hash}`), { headers: { range: "bytes=200000-" } })).status).toBe(416);
  });

  it("always has the empty blob", async () => {
    const r = await SELF.fetch(url(`cas/${EMPTY_SHA256}`));
    expect(r.status).toBe(200);
    expect((await r.arrayBuffer()).byteLength).toBe(0);
    expect((await put(`cas/${EMPTY_SHA256}`, new Uint8Array())).status).toBe(200);
  });

  it("refuses a CAS body that does not match its hash, storing nothing", async () => {
    const data = pseudoRandom(5000, 22);
    const wrong = await sha256Hex(pseudoRandom(5000, 23));
    const r = await put(`main/cas/${wrong}`, data);
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { status: string } }).error.status).toBe("INVALID_ARGUMENT");
    expect(await casHolds(wrong)).toBe(false);
    expect((await SELF.fetch(url(`main/cas/not-a-hash`))).status).toBe(400);
  });

  it("stores action results per instance, validating them", async () => {
    const instance = uniqueInstance("hc");
    const out = pseudoRandom(3000, 24);
    const outHash = await sha256Hex(out);
    await put(`${instance}/cas/${outHash}`, out);
    const result = create(ActionResultSchema, { outputFiles: [{ path: "o", digest: { hash: outHash, sizeBytes: 3000n } }] });
    const key = await sha256Hex("http action " + crypto.randomUUID());
    expect((await SELF.fetch(url(`${instance}/ac/${key}`))).status).toBe(404);
    expect((await put(`${instance}/ac/${key}`, toBinary(ActionResultSchema, result))).status).toBe(200);
    const got = await SELF.fetch(url(`${instance}/ac/${key}`));
    expect(got.status).toBe(200);
    expect(new Uint8Array(await got.arrayBuffer())).toEqual(toBinary(ActionResultSchema, result));
    expect((await SELF.fetch(url(`other/ac/${key}`))).status).toBe(404);
    expect((await put(`${instance}/ac/${key}`, new Uint8Array([0xff, 0xff, 0xff]))).status).toBe(400);
  });
});
