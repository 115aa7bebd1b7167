import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { PART_SIZE } from "../../src/storage/upload.ts";
import { digestOf, grpcWebClient, pseudoRandom, sha256Hex } from "./helpers.ts";

const bs = grpcWebClient(ByteStream);
const cas = grpcWebClient(ContentAddressableStorage);

describe("blobs over HTTP with ByteStream resource names", () => {
  it("PUTs and GETs a blob, whole and by range", async () => {
    const data = pseudoRandom(70_000, 31);
    const d = await digestOf(data);
    const put = await SELF.fetch(`http://kiln/a/b/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, { method: "PUT", body: data });
    expect(put.status).toBe(200);
    const got = await SELF.fetch(`http://kiln/a/b/blobs/${d.hash}/${d.sizeBytes}`);
    expect(await sha256Hex(new Uint8Array(await got.arrayBuffer()))).toBe(d.hash);
    const part = await SELF.fetch(`http://kiln/a/b/blobs/${d.hash}/${d.sizeBytes}`, { headers: { range: "bytes=-5" } });
    expect(part.status).toBe(206);
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(data.subarray(-5));
    expect((await SELF.fetch(`http://kiln/a/b/blobs/${d.hash}/${d.sizeBytes + 1n}`)).status).toBe(404);
  });

  it("serves an instance named \"cache\" like any other, beside the HTTP cache under /cache", async () => {
    const data = pseudoRandom(70_000, 36);
    const d = await digestOf(data);
    const put = await SELF.fetch(`http://kiln/cache/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, { method: "PUT", body: data });
    expect(put.status).toBe(200);
    const got = await SELF.fetch(`http://kiln/cache/blobs/${d.hash}/${d.sizeBytes}`);
    expect([got.status, await sha256Hex(new Uint8Array(await got.arrayBuffer()))]).toEqual([200, d.hash]);
    expect((await cas.findMissingBlobs({ instanceName: "cache", blobDigests: [d] })).missingBlobDigests).toEqual([]);
    // The HTTP cache of that instance is still /cache/cache/cas/{hash}.
    expect((await SELF.fetch(`http://kiln/cache/cache/cas/${d.hash}`)).status).toBe(200);
  });

  it("a small blob PUT again is stored again (verified, not looked up): wrong bytes under its name are refused and leave it intact", async () => {
    const data = pseudoRandom(1024, 34);
    const d = await digestOf(data);
    const url = () => `http://kiln/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    for (let i = 0; i < 2; i++) expect((await SELF.fetch(url(), { method: "PUT", body: data })).status).toBe(200);
    const wrong = pseudoRandom(1024, 35);
    const r = await SELF.fetch(url(), { method: "PUT", body: wrong });
    expect(r.status).toBe(400);
    const got = await SELF.fetch(`http://kiln/blobs/${d.hash}/${d.sizeBytes}`);
    expect(await sha256Hex(new Uint8Array(await got.arrayBuffer()))).toBe(d.hash);
    expect((await cas.findMissingBlobs({ blobDigests: [d] })).missingBlobDigests).toEqual([]);
  });

  it("refuses a body that does not match, and a bad resource name", async () => {
    const data = pseudoRandom(1000, 32);
    const d = await digestOf(pseudoRandom(1000, 33));
    const r = await SELF.fetch(`http://kiln/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, { method: "PUT", body: data });
    expect(r.status).toBe(400);
    expect((await SELF.fetch(`http://kiln/blobs/${d.hash}/${d.sizeBytes}`)).status).toBe(404);
    const bad = await SELF.fetch(`http://kiln/blobs/uploads/u/blobs/${d.hash}/${d.sizeBytes}`, { method: "PUT", body: data });
    expect(bad.status).toBe(400);
  });

  it("keeps the whole parts of a dropped PUT, to be resumed with ByteStream.Write", async () => {
    const size = PART_SIZE + 4096;
    const data = pseudoRandom(size, 34);
    const d = await digestOf(data);
    const res = `ci/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    let sent = 0;
    const dropping = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (sent >= PART_SIZE + 1024) return ctl.error(new Error("connection reset"));
        const chunk = data.subarray(sent, Math.min(sent + 65536, PART_SIZE + 1024));
        sent += chunk.byteLength;
        ctl.enqueue(chunk);
      },
    });
    const r = await SELF.fetch(`http://kiln/${res}`, { method: "PUT", body: dropping, headers: { "content-length": String(size) } }).catch(() => null);
    expect(r?.status ?? 0).not.toBe(200);
    const status = await bs.queryWriteStatus({ resourceName: res });
    expect(status.committedSize).toBe(BigInt(PART_SIZE));
    async function* rest() {
      yield { resourceName: res, writeOffset: BigInt(PART_SIZE), data: data.subarray(PART_SIZE), finishWrite: true };
    }
    expect((await bs.write(rest())).committedSize).toBe(d.sizeBytes);
    const got = await SELF.fetch(`http://kiln/ci/blobs/${d.hash}/${d.sizeBytes}`);
    expect(await sha256Hex(new Uint8Array(await got.arrayBuffer()))).toBe(d.hash);
  });
});
