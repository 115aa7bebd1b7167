// Remote Asset API end to end: a real @grpc/grpc-js client through the bridge (Push then Fetch,
// and a download from an allowed origin), and Bazel 4.2.3 fetching an http_file through Kiln with
// --experimental_remote_downloader, from a local HTTP origin only Kiln is allowed to reach for it.
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAssetOrigin, type AssetOrigin } from "../asset-origin.ts";
import { bazelAvailable, disposeOutputBase, runBazel } from "./bazel.ts";
import { connect, digestOf, errorOf, grpc, sha256, unary, type Client, type Clients } from "./grpc-client.ts";
import { requireTool, startStack, type Stack } from "./stack.ts";

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

describe.skipIf(!haveBazel)("Bazel 4.2.3 --experimental_remote_downloader", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kiln-asset-bazel-"));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("fetches an http_file through Kiln, and again from Kiln alone once the origin is gone", async () => {
    const content = `an http_file fetched through Kiln ${randomUUID()}\n`;
    const path = `/archive/${randomUUID()}.txt`;
    const ws = join(dir, "ws");
    await mkdir(ws, { recursive: true });
    await writeFile(
      join(ws, "WORKSPACE"),
      [
        'load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_file")',
        "http_file(",
        '    name = "asset",',
        `    urls = ["${origin.url}${path}?text=${encodeURIComponent(content)}"],`,
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
    const fetchOnce = async () => {
      const outputBase = join(dir, `ob-${randomUUID()}`);
      try {
        const run = await runBazel(ws, ["build", ...flags, "@asset//file"], { outputBase, timeoutMs: 5 * 60_000 });
        expect(run.code, run.stderr).toBe(0);
        return await readFile(join(outputBase, "external/asset/file/downloaded"), "utf8");
      } finally {
        await disposeOutputBase(ws, outputBase);
      }
    };
    expect(await fetchOnce()).toBe(content);
    // Kiln downloaded it once; Bazel itself never asked the origin.
    expect(origin.hits(path)).toBe(1);
    // With the origin closed, a fresh output base still gets the file: it can only come from Kiln.
    await origin.close();
    expect(await fetchOnce()).toBe(content);
  });
});
