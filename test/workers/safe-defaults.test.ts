// Safe defaults: without API_KEYS a Kiln on a public address serves reads only, unless
// ALLOW_OPEN=true; keys under 32 characters and malformed API_KEYS are refused with a message
// that says what to fix, on every surface and in /healthz.
import { SELF, env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  Capabilities,
  ContentAddressableStorage,
  Execution,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ResultStoreUpload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { connectClient, digestOf, errorOf, grpcWebClient } from "./helpers.ts";

const HASH = "d".repeat(64);
const cas = connectClient(ContentAddressableStorage);

/** Unset ALLOW_OPEN (vitest.config.mts sets it for the other tests) for one describe block. */
function withoutAllowOpen() {
  let saved: string | undefined;
  beforeAll(() => {
    saved = env.ALLOW_OPEN;
    delete env.ALLOW_OPEN;
  });
  afterAll(() => {
    env.ALLOW_OPEN = saved;
  });
}

describe("open mode on a public address", () => {
  withoutAllowOpen();
  const savedPublicUrl = env.PUBLIC_URL;
  afterEach(() => {
    env.PUBLIC_URL = savedPublicUrl;
  });

  it("reads work; writes, Execute and ResultStore uploads are PERMISSION_DENIED saying to set API_KEYS or ALLOW_OPEN=true", async () => {
    expect((await cas.findMissingBlobs({ instanceName: "open", blobDigests: [{ hash: HASH, sizeBytes: 1n }] })).missingBlobDigests).toHaveLength(1);
    const data = new TextEncoder().encode("open write " + crypto.randomUUID());
    const refusals = [
      await errorOf(cas.batchUpdateBlobs({ instanceName: "open", requests: [{ digest: await digestOf(data), data }] })),
      await errorOf(
        (async () => {
          for await (const _ of grpcWebClient(Execution).execute({ instanceName: "open", actionDigest: { hash: HASH, sizeBytes: 1n } }));
        })(),
      ),
      await errorOf(connectClient(ResultStoreUpload).createInvocation({ invocationId: crypto.randomUUID(), invocation: {} })),
    ];
    for (const e of refusals) {
      expect(e.code).toBe(Code.PermissionDenied);
      expect(e.rawMessage).toMatch(/API_KEYS/);
      expect(e.rawMessage).toMatch(/ALLOW_OPEN=true/);
    }
    const caps = await connectClient(Capabilities).getCapabilities({ instanceName: "open" });
    expect(caps.cacheCapabilities?.actionCacheUpdateCapabilities?.updateEnabled).toBe(false);
    expect(caps.executionCapabilities?.execEnabled).toBe(false);
  });

  it("the HTTP surfaces answer 403 with the reason, and /healthz says open-read-only", async () => {
    const data = "http write " + crypto.randomUUID();
    const { hash } = await digestOf(data);
    for (const url of [`http://kiln/cache/open/cas/${hash}`, `http://kiln/open/uploads/${crypto.randomUUID()}/blobs/${hash}/${data.length}`]) {
      const res = await SELF.fetch(url, { method: "PUT", body: data, headers: { "content-length": String(data.length) } });
      expect(res.status, url).toBe(403);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/ALLOW_OPEN=true/);
    }
    const health = await (await SELF.fetch("http://kiln/healthz")).json();
    expect(health).toMatchObject({ ok: true, auth: "open-read-only", reason: expect.stringMatching(/API_KEYS/) });
    const missing = await cas.findMissingBlobs({ instanceName: "open", blobDigests: [{ hash, sizeBytes: BigInt(data.length) }] });
    expect(missing.missingBlobDigests).toHaveLength(1); // nothing was stored
  });

  it("operator endpoints (/metrics, /admin/cas/stats) are 403 saying to set an admin key", async () => {
    for (const path of ["/metrics", "/admin/cas/stats"]) {
      const res = await SELF.fetch(`http://kiln${path}`);
      expect(res.status, path).toBe(403);
      expect(((await res.json()) as { error: { message: string } }).error.message, path).toMatch(/operator endpoints .*"admin": true/);
    }
    // From a loopback address with a local PUBLIC_URL (npm start) they stay open.
    env.PUBLIC_URL = "http://localhost:8787";
    expect((await SELF.fetch("http://127.0.0.1:8787/metrics")).status).toBe(200);
  });

  it("a loopback request to a local PUBLIC_URL may write; a public PUBLIC_URL refuses even loopback requests", async () => {
    const data = "local write " + crypto.randomUUID();
    const { hash } = await digestOf(data);
    const put = () => SELF.fetch(`http://127.0.0.1:8787/cache/open/cas/${hash}`, { method: "PUT", body: data, headers: { "content-length": String(data.length) } });
    env.PUBLIC_URL = "http://localhost:8787";
    expect((await put()).status).toBe(200);
    expect(await (await SELF.fetch("http://localhost/healthz")).json()).toEqual({ ok: true, auth: "open" });
    env.PUBLIC_URL = "https://kiln.example.com";
    expect((await put()).status).toBe(403);
  });
});

describe("ALLOW_OPEN=true", () => {
  it("lets anyone write on a public address, deliberately", async () => {
    expect(env.ALLOW_OPEN).toBe("true");
    const data = new TextEncoder().encode("allowed " + crypto.randomUUID());
    const r = await cas.batchUpdateBlobs({ instanceName: "open", requests: [{ digest: await digestOf(data), data }] });
    expect(r.responses[0]?.status?.code).toBe(0);
    expect(await (await SELF.fetch("http://kiln/healthz")).json()).toEqual({ ok: true, auth: "open" });
  });
});

describe("malformed API_KEYS", () => {
  afterEach(() => {
    delete env.API_KEYS;
  });

  const cases: [string, string, RegExp][] = [
    ["a key under 32 characters, named by its name", JSON.stringify([{ key: "short-key-12345", name: "ci-bot" }]), /API_KEYS\[0\] \("ci-bot"\).*15 characters.*at least 32/],
    ["a nameless short key, named by its index", JSON.stringify([{ key: "a".repeat(40) }, { key: "b".repeat(31) }]), /API_KEYS\[1\] \("key #1"\)/],
    ["JSON that does not parse", "[{key: nope", /API_KEYS is not valid JSON/],
    ["JSON that is not an array", '{"key": "x"}', /API_KEYS must be a JSON array/],
  ];

  for (const [what, value, message] of cases) {
    it(`${what}: UNAVAILABLE with the reason on every surface, and /healthz says so`, async () => {
      env.API_KEYS = value;
      const health = await SELF.fetch("http://kiln/healthz");
      expect(health.status).toBe(503);
      expect(await health.json()).toMatchObject({ ok: false, auth: "invalid", error: expect.stringMatching(message) });

      for (const client of [connectClient(ContentAddressableStorage), grpcWebClient(ContentAddressableStorage)]) {
        const e = await errorOf(client.findMissingBlobs({ instanceName: "x", blobDigests: [] }));
        expect(e.code).toBe(Code.Unavailable);
        expect(e.rawMessage).toMatch(message);
      }
      for (const [method, url] of [
        ["POST", "http://kiln/v2/x/blobs:findMissing"],
        ["GET", `http://kiln/cache/x/cas/${HASH}`],
        ["PUT", `http://kiln/cache/x/ac/${HASH}`],
        ["GET", `http://kiln/x/blobs/${HASH}/1`],
        ["PUT", `http://kiln/x/uploads/${crypto.randomUUID()}/blobs/${HASH}/1`],
      ] as const) {
        const res = await SELF.fetch(url, { method, body: method === "GET" ? undefined : "{}" });
        expect(res.status, `${method} ${url}`).toBe(503);
        const body = (await res.json()) as { error: { status: string; message: string } };
        expect(body.error.status).toBe("UNAVAILABLE");
        expect(body.error.message).toMatch(message);
      }
    });
  }
});
