// ResultStoreFileDownload: GetFile and GetFileTail over bytestream:// URIs of blobs in the CAS, on
// Connect, gRPC-web and REST; every other kind of URI is refused without being fetched.
import { Code } from "@connectrpc/connect";
import { SELF, env } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ResultStoreFileDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_file_download_pb.ts";
import { TAIL_MAX } from "../../src/services/resultstore-file-download.ts";
import { bytes, codeOf, connectClient, digestOf, errorOf, grpcWebClient, pseudoRandom, uniqueInstance } from "./helpers.ts";

const files = connectClient(ResultStoreFileDownload);
const cas = connectClient(ContentAddressableStorage);

async function put(instanceName: string, data: Uint8Array): Promise<string> {
  const d = await digestOf(data);
  const res = await cas.batchUpdateBlobs({ instanceName, requests: [{ digest: d, data }] });
  expect(res.responses[0]!.status?.code ?? 0).toBe(0);
  return `bytestream://127.0.0.1:8980/${instanceName ? instanceName + "/" : ""}blobs/${d.hash}/${d.sizeBytes}`;
}

async function getFile(client: typeof files, uri: string, readOffset = 0n, readLimit = 0n): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const r of client.getFile({ uri, readOffset, readLimit })) parts.push(r.data);
  return new Uint8Array(await new Blob(parts).arrayBuffer());
}

describe("ResultStoreFileDownload.GetFile", () => {
  it("streams a CAS blob named by a bytestream:// URI, with read_offset and read_limit", async () => {
    const data = pseudoRandom(2_500_000, 31);
    const uri = await put(uniqueInstance("files"), data);
    expect(await getFile(files, uri)).toEqual(data);
    expect(await getFile(files, uri, 1_000_000n, 10n)).toEqual(data.subarray(1_000_000, 1_000_010));
    expect(await getFile(files, uri, 2_499_990n)).toEqual(data.subarray(2_499_990));
    expect((await getFile(files, uri, BigInt(data.byteLength))).byteLength).toBe(0);
    expect(await getFile(grpcWebClient(ResultStoreFileDownload), uri, 5n, 100n)).toEqual(data.subarray(5, 105));
  });

  it("reads the empty instance name and the download API's files/ and file/ prefixes", async () => {
    const data = bytes("a test log\n");
    const uri = await put("", data);
    expect(uri).toMatch(/^bytestream:\/\/127\.0\.0\.1:8980\/blobs\//);
    expect(await getFile(files, uri)).toEqual(data);
    expect(await getFile(files, `files/${encodeURIComponent(uri)}`)).toEqual(data);
    expect(await getFile(files, `file/${uri}`)).toEqual(data);
  });

  it("refuses bad offsets, archive entries, missing blobs and URIs that are not this CAS's", async () => {
    const uri = await put(uniqueInstance("files"), bytes("twelve bytes"));
    expect(await codeOf(getFile(files, uri, 13n))).toBe(Code.OutOfRange);
    expect(await codeOf(getFile(files, uri, -1n))).toBe(Code.OutOfRange);
    expect(await codeOf(getFile(files, uri, 0n, -1n))).toBe(Code.InvalidArgument);
    const archive = await errorOf(
      (async () => {
        for await (const _ of files.getFile({ uri, archiveEntry: "META-INF/MANIFEST.MF" }));
      })(),
    );
    expect(archive.code).toBe(Code.Unimplemented);
    expect(archive.rawMessage).toMatch(/archive_entry/);
    const missing = uri.replace(/blobs\/[0-9a-f]{64}/, `blobs/${"b".repeat(64)}`);
    expect(await codeOf(getFile(files, missing))).toBe(Code.NotFound);
    for (const other of [
      "file:///etc/passwd",
      "http://169.254.169.254/latest/meta-data",
      "https://example.com/main/blobs/" + "a".repeat(64) + "/3",
      "gs://bucket/test.log",
      "bytestream://host/main/compressed-blobs/zstd/" + "a".repeat(64) + "/3",
      "bytestream://host/main/blobs/nothex/3",
      "",
    ]) {
      const e = await errorOf(getFile(files, other));
      expect(e.code, other).toBe(Code.InvalidArgument);
    }
    expect((await errorOf(getFile(files, "http://example.com/x"))).rawMessage).toMatch(/only bytestream:\/\//);
  });

  it("is served over REST at GET /v2/file/{uri} as a JSON array of chunks", async () => {
    const data = bytes("PASSED: //:ok_test\n");
    const uri = await put(uniqueInstance("rest"), data);
    const r = await SELF.fetch(`http://kiln/v2/file/${encodeURIComponent(uri)}`);
    expect(r.status).toBe(200);
    const chunks = (await r.json()) as { data: string }[];
    expect(atob(chunks.map((c) => c.data).join(""))).toBe("PASSED: //:ok_test\n");
    const bad = await SELF.fetch(`http://kiln/v2/file/${encodeURIComponent("file:///etc/passwd")}`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { status: string } }).error.status).toBe("INVALID_ARGUMENT");
  });

  describe("with API keys", () => {
    beforeAll(() => {
      env.API_KEYS = JSON.stringify([{ key: "team-reader-0123456-0123456789abcdef-xyz", instances: ["team"], access: "read", name: "reader" }]);
    });
    afterAll(() => {
      delete env.API_KEYS;
    });

    it("reads only what the caller's key may read", async () => {
      const uri = `bytestream://h/other/blobs/${"c".repeat(64)}/3`;
      expect(await codeOf(getFile(files, uri))).toBe(Code.Unauthenticated);
      const reader = connectClient(ResultStoreFileDownload, { authorization: "Bearer team-reader-0123456-0123456789abcdef-xyz" });
      expect(await codeOf(getFile(reader, uri))).toBe(Code.PermissionDenied);
      expect(await codeOf(getFile(reader, uri.replace("/other/", "/team/")))).toBe(Code.NotFound);
    });
  });
});

describe("ResultStoreFileDownload.GetFileTail", () => {
  it("answers the last bytes, read_offset counted from the end", async () => {
    const log = Array.from({ length: 1000 }, (_, i) => `line ${i}\n`).join("");
    const uri = await put(uniqueInstance("tail"), bytes(log));
    const text = async (readOffset: bigint, readLimit: bigint) => new TextDecoder().decode((await files.getFileTail({ uri, readOffset, readLimit })).data);
    expect(await text(0n, 9n)).toBe("line 999\n");
    expect(await text(9n, 9n)).toBe("line 998\n");
    expect(await text(0n, 0n)).toBe(log);
    expect(await text(BigInt(log.length), 0n)).toBe("");
    expect(await codeOf(files.getFileTail({ uri, readOffset: BigInt(log.length + 1) }))).toBe(Code.OutOfRange);
    expect(await codeOf(files.getFileTail({ uri, readLimit: -1n }))).toBe(Code.InvalidArgument);
    expect(await codeOf(files.getFileTail({ uri, archiveEntry: "x" }))).toBe(Code.Unimplemented);
    const rest = await SELF.fetch(`http://kiln/v2/file/tail/${encodeURIComponent(uri)}?readLimit=9`);
    expect(rest.status).toBe(200);
    expect(atob(((await rest.json()) as { data: string }).data)).toBe("line 999\n");
  });

  it("bounds an unlimited tail of a large file, and never starts inside a UTF-8 character", async () => {
    const big = pseudoRandom(TAIL_MAX + 500_000, 32);
    const uri = await put(uniqueInstance("tail"), big);
    const tail = (await files.getFileTail({ uri })).data;
    expect(tail.byteLength).toBeLessThanOrEqual(TAIL_MAX);
    expect(tail.byteLength).toBeGreaterThan(TAIL_MAX - 4);
    expect(big.subarray(big.byteLength - tail.byteLength)).toEqual(tail);
    const utf8 = await put(uniqueInstance("tail"), bytes("abc€€"));
    // The last 4 bytes begin inside the first "€" (3 bytes): the tail starts at the second one.
    expect(new TextDecoder().decode((await files.getFileTail({ uri: utf8, readLimit: 4n })).data)).toBe("€");
  });
});
