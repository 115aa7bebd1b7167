// CORS: preflights on every surface's paths, the headers browsers need to read gRPC-web and Connect
// statuses, origins from CORS_ORIGINS only, and never credentials with "*".
import { SELF, env } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { parseCorsOrigins } from "../../src/surfaces/cors.ts";

const UI = "https://ui.example.com";
const API_PATHS = [
  "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
  "/google.devtools.resultstore.v2.ResultStoreDownload/SearchInvocations",
  "/v2/invocations:search",
  "/v2/main/blobs:findMissing",
  `/main/blobs/${"a".repeat(64)}/1`,
  `/cache/main/cas/${"a".repeat(64)}`,
];

const preflight = (path: string, origin: string, method = "POST", headers = "content-type,connect-protocol-version,x-grpc-web,authorization") =>
  SELF.fetch(`http://kiln${path}`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": method, "access-control-request-headers": headers },
  });

const list = (h: string | null) => (h ?? "").split(",").map((s) => s.trim().toLowerCase());

const connectCall = (origin: string) =>
  SELF.fetch("http://kiln/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", {
    method: "POST",
    headers: { origin, "content-type": "application/json", "connect-protocol-version": "1" },
    body: JSON.stringify({ instanceName: "main" }),
  });

afterEach(() => {
  delete env.CORS_ORIGINS;
});

describe("CORS", () => {
  it("without CORS_ORIGINS answers preflights but allows no origin", async () => {
    const r = await preflight(API_PATHS[0]!, UI);
    expect(r.status).toBe(204);
    expect(r.headers.get("access-control-allow-origin")).toBeNull();
    const call = await connectCall(UI);
    expect(call.status).toBe(200);
    expect(call.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("answers preflights on every API path for a listed origin, with credentials", async () => {
    env.CORS_ORIGINS = `${UI}, http://localhost:5173/`;
    for (const path of API_PATHS) {
      const r = await preflight(path, UI);
      expect(r.status, path).toBe(204);
      expect(r.headers.get("access-control-allow-origin"), path).toBe(UI);
      expect(r.headers.get("access-control-allow-credentials"), path).toBe("true");
      expect(list(r.headers.get("access-control-allow-methods"))).toEqual(expect.arrayContaining(["get", "post", "put", "delete", "patch"]));
      const allowed = list(r.headers.get("access-control-allow-headers"));
      for (const h of ["authorization", "content-type", "connect-protocol-version", "connect-timeout-ms", "x-grpc-web", "x-user-agent", "grpc-timeout", "x-goog-fieldmask", "build.bazel.remote.execution.v2.requestmetadata-bin"]) {
        expect(allowed, h).toContain(h);
      }
      expect(r.headers.get("vary")).toMatch(/Origin/);
    }
    expect((await preflight(API_PATHS[0]!, "http://localhost:5173")).headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
  });

  it("allows no other origin, and does not match origins loosely", async () => {
    env.CORS_ORIGINS = UI;
    for (const origin of ["https://evil.example.com", "https://ui.example.com.evil.net", "http://ui.example.com", "null"]) {
      const r = await preflight(API_PATHS[0]!, origin);
      expect(r.headers.get("access-control-allow-origin"), origin).toBeNull();
      expect(r.headers.get("access-control-allow-credentials"), origin).toBeNull();
      const call = await connectCall(origin);
      expect(call.headers.get("access-control-allow-origin"), origin).toBeNull();
      expect(call.headers.get("vary")).toMatch(/Origin/);
    }
  });

  it("exposes the gRPC-web and Connect status headers on real calls, errors included", async () => {
    env.CORS_ORIGINS = UI;
    const ok = await connectCall(UI);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("access-control-allow-origin")).toBe(UI);
    const exposed = list(ok.headers.get("access-control-expose-headers"));
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin", "connect-content-encoding", "x-request-id"]) expect(exposed, h).toContain(h);
    // A gRPC-web error answered as trailers-only carries grpc-status in the headers.
    const bad = await SELF.fetch("http://kiln/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs", {
      method: "POST",
      headers: { origin: UI, "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      body: new Uint8Array([0, 0, 0, 0, 3, 0x0a, 0x01, 0x2f]),
    });
    expect(bad.headers.get("access-control-allow-origin")).toBe(UI);
    const rest404 = await SELF.fetch("http://kiln/no/such/route", { headers: { origin: UI } });
    expect(rest404.status).toBe(404);
    expect(rest404.headers.get("access-control-allow-origin")).toBe(UI);
  });

  it('with "*" allows any origin, never with credentials', async () => {
    env.CORS_ORIGINS = "*";
    const r = await preflight("/v2/invocations", "https://anyone.example.org", "GET", "x-goog-fieldmask");
    expect(r.status).toBe(204);
    expect(r.headers.get("access-control-allow-origin")).toBe("*");
    expect(r.headers.get("access-control-allow-credentials")).toBeNull();
    const call = await connectCall("https://anyone.example.org");
    expect(call.headers.get("access-control-allow-origin")).toBe("*");
    expect(call.headers.get("access-control-allow-credentials")).toBeNull();
    // "*" next to listed origins still means any origin without credentials.
    env.CORS_ORIGINS = `${UI},*`;
    const mixed = await preflight(API_PATHS[0]!, UI);
    expect(mixed.headers.get("access-control-allow-origin")).toBe("*");
    expect(mixed.headers.get("access-control-allow-credentials")).toBeNull();
  });

  it("parses CORS_ORIGINS strictly", () => {
    const c = parseCorsOrigins(" https://a.example , http://localhost:5173/ , not-an-origin, https://b.example/path ,");
    expect([...c.origins]).toEqual(["https://a.example", "http://localhost:5173"]);
    expect(c.any).toBe(false);
    expect(parseCorsOrigins(undefined)).toEqual({ any: false, origins: new Set() });
    expect(parseCorsOrigins("*").any).toBe(true);
  });
});
