// Malformed input gets a client error naming what is wrong, never a 500: bad %-encodings in
// paths, binary messages that do not parse (Connect, Connect streams, gRPC-web), REST bodies of
// the wrong JSON type, search queries past the limits D1 and the parser can take.
import { SELF, env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { searchIndex } from "../../src/resultstore/search-index.ts";
import { MAX_QUERY_DEPTH, MAX_QUERY_TERMS, compileQuery } from "../../src/resultstore/search-query.ts";
import { connectClient, errorOf } from "./helpers.ts";
import { thrownCode } from "./resultstore-download-helpers.ts";

const HASH = "a".repeat(64);
const TRUNCATED = Uint8Array.of(0x0a, 0x7f, 0x01); // field 1, 127 bytes promised, 1 given

async function errorBody(res: Response) {
  return (await res.json()) as { error: { status: string; message: string } };
}

function envelope(flags: number, body: Uint8Array) {
  const out = new Uint8Array(5 + body.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, body.byteLength);
  out.set(body, 5);
  return out;
}

describe("bad %-encodings in paths", () => {
  it("blob GET and PUT: 400 INVALID_ARGUMENT naming resource_name", async () => {
    for (const [method, path] of [
      ["GET", `/%ZZ/blobs/${HASH}/1`],
      ["HEAD", `/x/%E0%A4%A/blobs/${HASH}/1`],
      ["PUT", `/%FF/uploads/${crypto.randomUUID()}/blobs/${HASH}/1`],
    ] as const) {
      const res = await SELF.fetch(`http://kiln${path}`, { method, body: method === "PUT" ? "x" : undefined });
      expect(res.status, `${method} ${path}`).toBe(400);
      if (method !== "HEAD") expect((await errorBody(res)).error.message).toMatch(/resource_name .* is not valid %-encoding/);
    }
  });

  it("HTTP cache: 400 INVALID_ARGUMENT naming instance_name", async () => {
    for (const method of ["GET", "PUT"]) {
      const res = await SELF.fetch(`http://kiln/cache/%C3%28%/cas/${HASH}`, { method, body: method === "PUT" ? "x" : undefined, headers: { "content-length": "1" } });
      expect(res.status).toBe(400);
      expect((await errorBody(res)).error).toMatchObject({ status: "INVALID_ARGUMENT", message: expect.stringContaining("instance_name") });
    }
  });
});

describe("binary messages that do not parse", () => {
  const path = `http://kiln/${ContentAddressableStorage.typeName}`;

  it("Connect unary: 400 invalid_argument, not 500 internal", async () => {
    const res = await SELF.fetch(`${path}/FindMissingBlobs`, { method: "POST", headers: { "content-type": "application/proto" }, body: TRUNCATED });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/^parse binary:/) });
  });

  it("Connect server stream: the end-stream message says invalid_argument", async () => {
    const res = await SELF.fetch(`${path}/GetTree`, {
      method: "POST",
      headers: { "content-type": "application/connect+proto" },
      body: envelope(0, TRUNCATED),
    });
    const text = new TextDecoder().decode(await res.arrayBuffer());
    expect(text).toContain('"code":"invalid_argument"');
    expect(text).not.toContain("internal");
  });

  it("gRPC-web: grpc-status 3 (INVALID_ARGUMENT), not 13, also for a compressed flag without grpc-encoding", async () => {
    for (const body of [envelope(0, TRUNCATED), envelope(1, Uint8Array.of(1, 2, 3))]) {
      const res = await SELF.fetch(`${path}/FindMissingBlobs`, { method: "POST", headers: { "content-type": "application/grpc-web+proto" }, body });
      const text = new TextDecoder().decode(await res.arrayBuffer());
      expect(text).toMatch(/grpc-status: 3\r\n/);
    }
  });

  it("a well-formed request still works through the same wrapper", async () => {
    const cas = connectClient(ContentAddressableStorage);
    const r = await cas.findMissingBlobs({ instanceName: "malformed", blobDigests: [{ hash: HASH, sizeBytes: 1n }] });
    expect(r.missingBlobDigests).toHaveLength(1);
    const e = await errorOf(cas.findMissingBlobs({ instanceName: "malformed", blobDigests: [{ hash: "nothex", sizeBytes: 1n }] }));
    expect(e.code).toBe(Code.InvalidArgument);
  });
});

describe("REST bodies of the wrong JSON type", () => {
  it("a JSON string or number where the body field is a message: 400 naming the field", async () => {
    for (const body of ['"a string"', "42", "[1]"]) {
      const res = await SELF.fetch("http://kiln/v2/invocations/fuzz-inv", { method: "PATCH", headers: { "content-type": "application/json" }, body });
      expect(res.status, body).toBe(400);
      expect((await errorBody(res)).error).toMatchObject({ status: "INVALID_ARGUMENT", message: expect.stringContaining("invocation") });
    }
  });
});

describe("search query limits", () => {
  const terms = (n: number) => Array.from({ length: n }, (_, i) => `name = "invocations/n${i}"`).join(" OR ");
  const nested = (n: number) => "NOT ".repeat(n) + "name = x";

  it(`at the limits (${MAX_QUERY_TERMS} terms, depth ${MAX_QUERY_DEPTH}) the query runs on D1`, async () => {
    const q = `(${terms(MAX_QUERY_TERMS - 1)}) AND ${"(".repeat(MAX_QUERY_DEPTH - 1)}${nested(0)}${")".repeat(MAX_QUERY_DEPTH - 1)}`;
    const r = await searchIndex(env.INDEX, "limits", "invocation", q, { exactMatch: false, offset: 0, limit: 10, projectId: "p", after: { key: 1, name: "n" } });
    expect(r.items).toEqual([]);
    const fns = Array.from({ length: MAX_QUERY_TERMS }, (_, i) => `propertyEquals(k${i}, v)`).join(" OR ");
    expect((await searchIndex(env.INDEX, "limits", "invocation", fns, { exactMatch: false, offset: 0, limit: 10 })).items).toEqual([]);
    expect(() => compileQuery("invocation", nested(MAX_QUERY_DEPTH), false)).not.toThrow();
  });

  it("names every JavaScript object has (constructor, __proto__, toString) are unknown fields and functions: INVALID_ARGUMENT", () => {
    for (const q of ["constructor = 1", "__proto__ = 1", "toString = x", "hasOwnProperty = 1", 'constructor("a", "b")', 'toString("a", "b")', 'valueOf("a", "b")']) {
      for (const kind of ["invocation", "configuredTarget"] as const) expect(thrownCode(() => compileQuery(kind, q, false)), `${kind}: ${q}`).toBe(Code.InvalidArgument);
    }
  });

  it("one over: INVALID_ARGUMENT naming the limit; NOT chains and 200 OR terms too", () => {
    const message = (q: string) => {
      try {
        compileQuery("invocation", q, false);
      } catch (e) {
        return (e as Error).message;
      }
      return "accepted";
    };
    expect(message(terms(MAX_QUERY_TERMS + 1))).toMatch(/MAX_QUERY_TERMS/);
    expect(message(terms(200))).toMatch(/MAX_QUERY_TERMS/);
    expect(message(nested(MAX_QUERY_DEPTH + 1))).toMatch(/MAX_QUERY_DEPTH/);
    expect(message(nested(2000))).toMatch(/MAX_QUERY_DEPTH/);
    expect(message("(".repeat(5000) + "name = x" + ")".repeat(5000))).toMatch(/MAX_QUERY_LENGTH|MAX_QUERY_DEPTH/);
    expect(thrownCode(() => compileQuery("invocation", terms(200), false))).toBe(Code.InvalidArgument);
  });

  it("over the limit through the API: INVALID_ARGUMENT, not a 500", async () => {
    const e = await errorOf(connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*" }).searchInvocations({ query: nested(2000), pageSize: 5 }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/MAX_QUERY_DEPTH/);
  });
});
