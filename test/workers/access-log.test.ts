// Request ids and the access log: every answer carries x-request-id (cf-ray when Cloudflare sent
// one), every error body carries it as a google.rpc.RequestInfo detail, and each request writes
// one JSON access-log line with the caller, instance, method, status and code.
import { SELF, env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { RequestInfoSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import type { AccessRecord } from "../../src/access-log.ts";
import { connectClient, errorOf, grpcWebClient } from "./helpers.ts";

const HASH = "e".repeat(64);
const REQUEST_INFO = "type.googleapis.com/google.rpc.RequestInfo";

async function restError(res: Response) {
  return ((await res.json()) as { error: { status: string; details: { "@type": string; requestId?: string }[] } }).error;
}

describe("request ids", () => {
  it("every answer carries x-request-id; cf-ray is used when present", async () => {
    const a = await SELF.fetch("http://kiln/healthz");
    const b = await SELF.fetch("http://kiln/healthz");
    expect(a.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.headers.get("x-request-id")).not.toBe(b.headers.get("x-request-id"));
    const ray = await SELF.fetch("http://kiln/healthz", { headers: { "cf-ray": "8f1e2d3c4b5a6978-AMS" } });
    expect(ray.headers.get("x-request-id")).toBe("8f1e2d3c4b5a6978-AMS");
  });

  it("REST, HTTP cache and blob HTTP error bodies carry it as a RequestInfo detail", async () => {
    for (const [method, url] of [
      ["GET", "http://kiln/no/such/route"],
      ["POST", "http://kiln/v2/x/blobs:findMissing"],
      ["GET", `http://kiln/cache/x/cas/${HASH}`],
      ["GET", `http://kiln/cache/%ZZ/cas/${HASH}`],
      ["GET", `http://kiln/x/blobs/${HASH}/1`],
    ] as const) {
      const res = await SELF.fetch(url, { method, body: method === "POST" ? '{"blobDigests": "not a list"}' : undefined });
      expect(res.status, url).toBeGreaterThanOrEqual(400);
      const err = await restError(res);
      const info = err.details.find((d) => d["@type"] === REQUEST_INFO);
      expect(info?.requestId, url).toBe(res.headers.get("x-request-id"));
    }
  });

  it("Connect and gRPC-web errors carry it: from a service, from a stream, and from a message that does not parse", async () => {
    const ray = `ray-${crypto.randomUUID()}`;
    for (const client of [connectClient(ContentAddressableStorage, { "cf-ray": ray }), grpcWebClient(ContentAddressableStorage, { "cf-ray": ray })]) {
      const unary = await errorOf(client.findMissingBlobs({ instanceName: "x", blobDigests: [{ hash: "nothex", sizeBytes: 1n }] }));
      expect(unary.code).toBe(Code.InvalidArgument);
      expect(unary.findDetails(RequestInfoSchema).map((d) => d.requestId)).toEqual([ray]);
      const stream = await errorOf(
        (async () => {
          for await (const _ of client.getTree({ instanceName: "x", rootDigest: { hash: HASH, sizeBytes: 5n } }));
        })(),
      );
      expect(stream.code).toBe(Code.NotFound);
      expect(stream.findDetails(RequestInfoSchema).map((d) => d.requestId)).toEqual([ray]);
    }
    const res = await SELF.fetch(`http://kiln/${ContentAddressableStorage.typeName}/FindMissingBlobs`, {
      method: "POST",
      headers: { "content-type": "application/proto", "cf-ray": ray },
      body: Uint8Array.of(0x0a, 0x7f, 0x01),
    });
    const body = (await res.json()) as { code: string; details: { type: string; value: string }[] };
    expect(body.code).toBe("invalid_argument");
    expect(body.details.map((d) => d.type)).toContain("google.rpc.RequestInfo");
  });
});

describe("access log", () => {
  const KEY = "access-log-key-0123456789-0123456789";
  let lines: AccessRecord[] = [];
  let spy: ReturnType<typeof vi.spyOn>;
  beforeAll(() => {
    env.API_KEYS = JSON.stringify([{ key: KEY, name: "log-bot", tenant: "acme" }]);
    env.ACCESS_LOG = "true"; // vitest.config.mts turns it off for the other suites
    spy = vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
      const parsed = typeof args[0] === "string" && args[0].startsWith('{"type":"access"') ? JSON.parse(args[0]) : undefined;
      if (parsed) lines.push(parsed);
    });
  });
  afterEach(() => {
    lines = [];
  });
  afterAll(() => {
    spy.mockRestore();
    delete env.API_KEYS;
    env.ACCESS_LOG = "false";
  });

  const lineFor = (id: string | null) => lines.find((l) => l.requestId === id);

  it("one JSON line per request: key name, tenant, instance, method, status, code, bytes, ms", async () => {
    const res = await SELF.fetch("http://kiln/v2/team/a/blobs:findMissing", {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ blobDigests: [{ hash: HASH, sizeBytes: "1" }] }),
    });
    expect(res.status).toBe(200);
    await res.text();
    const line = lineFor(res.headers.get("x-request-id"));
    expect(line).toMatchObject({
      surface: "rest",
      method: "ContentAddressableStorage.FindMissingBlobs",
      httpMethod: "POST",
      status: 200,
      code: "OK",
      key: "log-bot",
      tenant: "acme",
      instance: "team/a",
    });
    expect(line?.bytesIn).toBeGreaterThan(0);
    expect(typeof line?.ms).toBe("number");
    expect(lines.filter((l) => l.requestId === line?.requestId)).toHaveLength(1);
  });

  it("a gRPC-web call is logged when its body ends, with the code from its trailer", async () => {
    const ray = `ray-${crypto.randomUUID()}`;
    const e = await errorOf(grpcWebClient(ContentAddressableStorage, { authorization: `Bearer ${KEY}`, "cf-ray": ray }).findMissingBlobs({ instanceName: "team/b", blobDigests: [{ hash: "nothex", sizeBytes: 1n }] }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(lineFor(ray)).toMatchObject({ surface: "grpc-web", method: "ContentAddressableStorage.FindMissingBlobs", status: 200, code: "INVALID_ARGUMENT", key: "log-bot", instance: "team/b" });
    expect(lineFor(ray)?.bytesOut).toBeGreaterThan(0);
  });

  it("refusals are logged too: an unauthenticated HTTP-cache GET", async () => {
    const res = await SELF.fetch(`http://kiln/cache/team/cas/${HASH}`);
    expect(res.status).toBe(401);
    expect(lineFor(res.headers.get("x-request-id"))).toMatchObject({ surface: "http-cache", method: "GET cas", status: 401, code: "UNAUTHENTICATED", key: "anonymous" });
  });
});
