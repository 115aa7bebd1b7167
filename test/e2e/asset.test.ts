// Remote Asset API end to end: a real @grpc/grpc-js client through the bridge (Push then Fetch,
// and a download from an allowed origin), and Bazel 4.2.3 fetching an http_file through Kiln with
// --experimental_remote_downloader, from a local HTTP origin only Kiln is allowed to reach for it.
import { createHash, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAssetOrigin, type AssetOrigin } from "../asset-origin.ts";
import { bazelAvailable, disposeOutputBase, runBazel } from "./bazel.ts";
import { connect, digestOf, errorOf, grpc, sha256, unary, type Client, type Clients } from "./grpc-client.ts";
import { peakRss, requireTool, sampleRss, startStack, type Stack } from "./stack.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const assetPkg = grpc.loadPackageDefinition(
  protoLoader.loadSync(["build/bazel/remote/asset/v1/remote_asset.proto"], {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [`${root}proto`, `${root}node_modules/google-proto-files`],
  }),
) as any;
const assetApi = assetPkg.build.bazel.remote.asset.v1;

const haveBazel = requireTool("bazel", bazelAvailable);
const sri256 = (b: string | Uint8Array) => `sha256-${Buffer.from(sha256(b), "hex").toString("base64")}`;

let origin: AssetOrigin;
let stack: Stack;

beforeAll(async () => {
  origin = await startAssetOrigin();
  stack = await startStack({ vars: { ASSET_FETCH_ALLOW: new URL(origin.url).host } });
});

afterAll(async () => {
  await stack?.stop();
  await origin?.close();
});

describe("Remote Asset through the bridge (grpc-js)", () => {
  let clients: Clients;
  let fetchClient: Client;
  let pushClient: Client;
  beforeAll(() => {
    clients = connect(stack.grpcTarget);
    const creds = grpc.credentials.createInsecure();
    fetchClient = new assetApi.Fetch(stack.grpcTarget, creds);
    pushClient = new assetApi.Push(stack.grpcTarget, creds);
  });
  afterAll(() => {
    clients?.close();
    fetchClient?.close();
    pushClient?.close();
  });

  it("PushBlob then FetchBlob returns the pushed digest; unknown qualifiers are INVALID_ARGUMENT", async () => {
    const data = Buffer.from(`pushed through the bridge ${randomUUID()}`);
    const d = digestOf(data);
    await unary(clients.cas, "BatchUpdateBlobs", { instance_name: "e2e/assets", requests: [{ digest: d, data }] });
    const uri = `urn:uuid:${randomUUID()}`;
    const qualifiers = [{ name: "bazel.canonical_id", value: "e2e" }];
    await unary(pushClient, "PushBlob", { instance_name: "e2e/assets", uris: [uri], qualifiers, blob_digest: d });
    const r = await unary(fetchClient, "FetchBlob", { instance_name: "e2e/assets", uris: [uri], qualifiers });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.blob_digest).toEqual(d);
    expect(r.digest_function).toBe("SHA256");
    const err = await errorOf(unary(fetchClient, "FetchBlob", { instance_name: "e2e/assets", uris: [uri], qualifiers: [{ name: "git.ref", value: "x" }] }));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it("PushDirectory then FetchDirectory", async () => {
    const dir = Buffer.from([]); // the empty Directory message
    const d = digestOf(dir);
    const uri = `https://example.invalid/${randomUUID()}.git`;
    await unary(pushClient, "PushDirectory", { uris: [uri], root_directory_digest: d });
    const r = await unary(fetchClient, "FetchDirectory", { uris: [uri] });
    expect(r.root_directory_digest).toEqual(d);
  });

  it("FetchBlob downloads from the allowed origin into the CAS, verified by checksum.sri", async () => {
    const text = `origin bytes ${randomUUID()}`;
    const path = `/dl/${randomUUID()}`;
    const uri = `${origin.url}${path}?text=${encodeURIComponent(text)}`;
    const r = await unary(fetchClient, "FetchBlob", { uris: [uri], qualifiers: [{ name: "checksum.sri", value: sri256(text) }] });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.blob_digest).toEqual(digestOf(Buffer.from(text)));
    const read = await unary(clients.cas, "BatchReadBlobs", { digests: [r.blob_digest] });
    expect(Buffer.from(read.responses[0].data).toString()).toBe(text);
    const bad = await unary(fetchClient, "FetchBlob", { uris: [uri + "&x=1"], qualifiers: [{ name: "checksum.sri", value: sri256("not it") }] });
    expect(bad.status.code).toBe(grpc.status.ABORTED);
    expect(origin.hits(path)).toBe(2);
  });
});

describe("a 512 MiB download", () => {
  const SIZE = 512 * 1024 * 1024;
  // The origin sends SIZE bytes of value `byte` (see test/asset-origin.ts).
  const expectedOf = (byte: number) => {
    const h = createHash("sha256");
    const block = Buffer.alloc(64 * 1024, byte);
    for (let n = 0; n < SIZE; n += block.length) h.update(block);
    return h.digest("hex");
  };
  // Holding the body would cost over 537 MB on top of what streaming costs; measured growth of
  // workerd's RSS while streaming it (local R2's own buffers) was 176-237 MB on the shared 2-core
  // machine, so this bound leaves margin and still fails on a buffered body.
  const GROWTH_BOUND = 450e6;
  /** FetchBlob with a deadline for a slow, shared machine (the helper's is 120 s). */
  const fetchBlob = (client: Client, req: object) =>
    new Promise<any>((resolve, reject) =>
      client.FetchBlob(req, new grpc.Metadata(), { deadline: Date.now() + 15 * 60_000 }, (e: grpc.ServiceError | null, r: any) => (e ? reject(e) : resolve(r))),
    );

  // Chunked bodies (no Content-Length, as GitHub sends archives) go through R2 multipart uploads;
  // each has content of its own, so none is answered from a blob an earlier case stored.
  it.each([
    ["with a sha256 checksum.sri (one put R2 verifies)", true, 120, false],
    ["without a checksum (staged, hashed, copied)", false, 120, false],
    ["chunked, with a sha256 checksum.sri (multipart under its CAS key)", true, 121, true],
    ["chunked, without a checksum (multipart staged, hashed on the way, copied)", false, 122, true],
  ])("streams into the CAS %s, with bounded worker memory", async (_, withSri, byte, chunked) => {
    const fetchClient = new assetApi.Fetch(stack.grpcTarget, grpc.credentials.createInsecure());
    const expected = expectedOf(byte);
    try {
      const uri = `${origin.url}/big/${randomUUID()}?repeat=${SIZE}&byte=${byte}${chunked ? "&chunked=1" : ""}`;
      const qualifiers = withSri ? [{ name: "checksum.sri", value: `sha256-${Buffer.from(expected, "hex").toString("base64")}` }] : [];
      const idle = sampleRss(stack.workerPids());
      const peak = peakRss(stack.workerPids);
      peak.start();
      const t0 = performance.now();
      const r = await fetchBlob(fetchClient, { uris: [uri], qualifiers });
      const ms = performance.now() - t0;
      const top = peak.stop();
      console.log(`[asset] 512 MiB FetchBlob ${chunked ? "chunked " : ""}${withSri ? "sri" : "staged"}: ${(SIZE / 1e6 / (ms / 1000)).toFixed(1)} MB/s, workerd RSS ${(idle / 1e6).toFixed(0)} -> peak ${(top / 1e6).toFixed(0)} MB`);
      expect(r.status?.code ?? 0, r.status?.message).toBe(0);
      expect(r.blob_digest).toEqual({ hash: expected, size_bytes: String(SIZE) });
      expect(top - idle).toBeLessThan(GROWTH_BOUND);
    } finally {
      fetchClient.close();
    }
  });
});

describe.skipIf(!haveBazel)("Bazel 4.2.3 --experimental_remote_downloader", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kiln-asset-bazel-"));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A workspace whose http_file is `url` with `content`'s sha256; builds it in a fresh output base. */
  async function fetchHttpFile(url: string, content: string) {
    const ws = join(dir, `ws-${randomUUID()}`);
    await mkdir(ws, { recursive: true });
    await writeFile(
      join(ws, "WORKSPACE"),
      [
        'load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_file")',
        "http_file(",
        '    name = "asset",',
        `    urls = ["${url}"],`,
        `    sha256 = "${sha256(content)}",`,
        ")",
        "",
      ].join("\n"),
    );
    await writeFile(join(ws, "BUILD"), "");
    const flags = [
      `--experimental_remote_downloader=grpc://${stack.grpcTarget}`,
      `--remote_cache=grpc://${stack.grpcTarget}`,
      "--repository_cache=",
    ];
    const outputBase = join(dir, `ob-${randomUUID()}`);
    try {
      const run = await runBazel(ws, ["build", ...flags, "@asset//file"], { outputBase, timeoutMs: 5 * 60_000 });
      const file = run.code === 0 ? await readFile(join(outputBase, "external/asset/file/downloaded"), "utf8") : undefined;
      return { ...run, file };
    } finally {
      await disposeOutputBase(ws, outputBase);
    }
  }

  it("fails the fetch when the URL's host is not allowed: Kiln refuses and Bazel does not go around it", async () => {
    const content = `refused ${randomUUID()}\n`;
    const path = `/archive/${randomUUID()}.txt`;
    // ASSET_FETCH_ALLOW names 127.0.0.1:PORT; localhost:PORT is the same server under another name.
    const url = `http://localhost:${new URL(origin.url).port}${path}?text=${encodeURIComponent(content)}`;
    const run = await fetchHttpFile(url, content);
    expect(run.code, run.stderr).not.toBe(0);
    expect(run.stderr).toMatch(/PERMISSION_DENIED|ASSET_FETCH_ALLOW/);
    expect(origin.hits(path)).toBe(0);
  });

  it("fetches an http_file through Kiln, and again from Kiln alone once the origin is gone", async () => {
    const content = `an http_file fetched through Kiln ${randomUUID()}\n`;
    const path = `/archive/${randomUUID()}.txt`;
    const url = `${origin.url}${path}?text=${encodeURIComponent(content)}`;
    const fetchOnce = async () => {
      const run = await fetchHttpFile(url, content);
      expect(run.code, run.stderr).toBe(0);
      return run.file;
    };
    expect(await fetchOnce()).toBe(content);
    // Kiln downloaded it once; Bazel itself never asked the origin.
    expect(origin.hits(path)).toBe(1);
    // With the origin closed, a fresh output base still gets the file: it can only come from Kiln.
    await origin.close();
    expect(await fetchOnce()).toBe(content);
  });
});
