import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  Capabilities,
  ContentAddressableStorage,
  DigestFunction_Value,
  DirectorySchema,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { EMPTY_SHA256 } from "../../src/storage/digest.ts";
import { bytes, codeOf, connectClient, digestOf, grpcWebClient, pseudoRandom } from "./helpers.ts";

const cas = connectClient(ContentAddressableStorage);


describe("Capabilities", () => {
  it("advertises SHA256, API 2.0-2.3, a batch limit and AC updates", async () => {
    const caps = await grpcWebClient(Capabilities).getCapabilities({ instanceName: "" });
    expect(caps.cacheCapabilities?.digestFunctions).toEqual([DigestFunction_Value.SHA256]);
    expect(caps.cacheCapabilities?.actionCacheUpdateCapabilities?.updateEnabled).toBe(true);
    expect(Number(caps.cacheCapabilities?.maxBatchTotalSizeBytes)).toBeGreaterThan(1_000_000);
    expect(caps.lowApiVersion).toMatchObject({ major: 2, minor: 0 });
    expect(caps.highApiVersion).toMatchObject({ major: 2, minor: 3 });
    expect(caps.executionCapabilities?.digestFunction).toBe(DigestFunction_Value.SHA256);
  });
});

describe("FindMissingBlobs", () => {
  it("reports missing blobs, never the empty blob, and not what was uploaded", async () => {
    const a = bytes("blob a " + crypto.randomUUID());
    const da = await digestOf(a);
    const db = await digestOf("blob b " + crypto.randomUUID());
    const empty = { hash: EMPTY_SHA256, sizeBytes: 0n };
    let r = await cas.findMissingBlobs({ instanceName: "x", blobDigests: [da, db, empty] });
    expect(r.missingBlobDigests.map((d) => d.hash).sort()).toEqual([da.hash, db.hash].sort());
    await cas.batchUpdateBlobs({ instanceName: "x", requests: [{ digest: da, data: a }] });
    r = await cas.findMissingBlobs({ instanceName: "x", blobDigests: [da, db, empty] });
    expect(r.missingBlobDigests.map((d) => d.hash)).toEqual([db.hash]);
  });

  it("treats the size as part of the digest", async () => {
    const a = bytes("sized " + crypto.randomUUID());
    const da = await digestOf(a);
    await cas.batchUpdateBlobs({ instanceName: "", requests: [{ digest: da, data: a }] });
    const wrongSize = { hash: da.hash, sizeBytes: da.sizeBytes + 1n };
    const r = await cas.findMissingBlobs({ instanceName: "", blobDigests: [wrongSize] });
    expect(r.missingBlobDigests).toHaveLength(1);
  });

  it("answers 10,000 digests in one call", async () => {
    const digests = await Promise.all(Array.from({ length: 10_000 }, (_, i) => digestOf(`many ${i} ${Math.random()}`)));
    const r = await cas.findMissingBlobs({ instanceName: "", blobDigests: digests });
    expect(r.missingBlobDigests).toHaveLength(10_000);
  });

  it("lists each missing digest once, in the order asked, as it was sent", async () => {
    const a = bytes("order a " + crypto.randomUUID());
    const da = await digestOf(a);
    await cas.batchUpdateBlobs({ instanceName: "", requests: [{ digest: da, data: a }] });
    const [m1, m2, m3] = await Promise.all([1, 2, 3].map((i) => digestOf(`order missing ${i} ${crypto.randomUUID()}`)));
    const asked = [m3!, da, m1!, m3!, { hash: da.hash, sizeBytes: da.sizeBytes + 7n }, da, m2!, m1!];
    const r = await cas.findMissingBlobs({ instanceName: "", blobDigests: asked });
    expect(r.missingBlobDigests.map((d) => [d.hash, d.sizeBytes])).toEqual([
      [m3!.hash, m3!.sizeBytes],
      [m1!.hash, m1!.sizeBytes],
      [da.hash, da.sizeBytes + 7n],
      [m2!.hash, m2!.sizeBytes],
    ]);
  });

  it("names the malformed element of a long list, and refuses sizes past 2^53", async () => {
    const good = await Promise.all([1, 2, 3].map((i) => digestOf(`named ${i}`)));
    const err = await cas.findMissingBlobs({ blobDigests: [...good, { hash: "Z".repeat(64), sizeBytes: 3n }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toContain("blob_digests[3].hash");
    const big = await cas.findMissingBlobs({ blobDigests: [{ hash: "a".repeat(64), sizeBytes: 2n ** 60n }] }).catch((e: unknown) => e);
    expect((big as ConnectError).code).toBe(Code.InvalidArgument);
    expect((big as ConnectError).rawMessage).toContain("blob_digests[0].size_bytes");
  });

  it("rejects malformed digests and other digest functions", async () => {
    expect(await codeOf(cas.findMissingBlobs({ blobDigests: [{ hash: "abc", sizeBytes: 1n }] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(cas.findMissingBlobs({ blobDigests: [{ hash: "A".repeat(64), sizeBytes: 1n }] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(cas.findMissingBlobs({ blobDigests: [{ hash: "a".repeat(64), sizeBytes: -1n }] }))).toBe(Code.InvalidArgument);
    expect(await codeOf(cas.findMissingBlobs({ digestFunction: DigestFunction_Value.BLAKE3, blobDigests: [] }))).toBe(Code.InvalidArgument);
  });

  it("refuses reserved segments in instance names", async () => {
    for (const name of ["a/blobs", "uploads", "x//y", "/x", "operations/z"]) {
      expect(await codeOf(cas.findMissingBlobs({ instanceName: name, blobDigests: [] }))).toBe(Code.InvalidArgument);
    }
  });
});

describe("BatchUpdateBlobs and BatchReadBlobs", () => {
  it("gives each blob its own status and stores nothing that does not match", async () => {
    const good = bytes("good " + crypto.randomUUID());
    const bad = bytes("bad " + crypto.randomUUID());
    const dGood = await digestOf(good);
    const dBadHash = await digestOf("something else " + crypto.randomUUID());
    dBadHash.sizeBytes = BigInt(bad.byteLength);
    const dBadSize = { ...(await digestOf(bad)), sizeBytes: BigInt(bad.byteLength + 3) };
    const r = await cas.batchUpdateBlobs({
      requests: [
        { digest: dGood, data: good },
        { digest: dBadHash, data: bad },
        { digest: dBadSize, data: bad },
        { digest: { hash: "zz", sizeBytes: 1n }, data: bad },
      ],
    });
    expect(r.responses.map((x) => x.status?.code)).toEqual([0, Code.InvalidArgument, Code.InvalidArgument, Code.InvalidArgument]);
    expect(r.responses[1]!.status?.message).toMatch(/does not hash/);
    const missing = await cas.findMissingBlobs({ blobDigests: [dGood, dBadHash, dBadSize] });
    expect(missing.missingBlobDigests.map((d) => d.hash).sort()).toEqual([dBadHash.hash, dBadSize.hash].sort());

    const read = await cas.batchReadBlobs({ digests: [dGood, dBadHash, { hash: EMPTY_SHA256, sizeBytes: 0n }] });
    expect(read.responses.map((x) => x.status?.code)).toEqual([0, Code.NotFound, 0]);
    expect(new TextDecoder().decode(read.responses[0]!.data)).toBe(new TextDecoder().decode(good));
    expect(read.responses[2]!.data.byteLength).toBe(0);
  });

  it("refuses a batch over max_batch_total_size_bytes as a whole", async () => {
    const big = pseudoRandom(2_500_000, 7);
    const big2 = pseudoRandom(2_500_000, 8);
    const r = cas.batchUpdateBlobs({
      requests: [
        { digest: await digestOf(big), data: big },
        { digest: await digestOf(big2), data: big2 },
      ],
    });
    const err = await r.catch((e) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/max_batch_total_size_bytes/);
    const missing = await cas.findMissingBlobs({ blobDigests: [await digestOf(big)] });
    expect(missing.missingBlobDigests).toHaveLength(1);
  });

  it("refuses a read batch over the limit", async () => {
    const d = { hash: "a".repeat(64), sizeBytes: 5_000_000n };
    expect(await codeOf(cas.batchReadBlobs({ digests: [d] }))).toBe(Code.InvalidArgument);
  });
});

describe("GetTree", () => {
  async function put(msg: Uint8Array) {
    const d = await digestOf(msg);
    await cas.batchUpdateBlobs({ requests: [{ digest: d, data: msg }] });
    return d;
  }

  async function buildTree() {
    const salt = crypto.randomUUID();
    const leaf = async (n: number) => put(toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: `f${n}-${salt}`, digest: await digestOf(`x${n}`) }] })));
    const leaves = await Promise.all([1, 2, 3, 4].map(leaf));
    const mid1 = await put(toBinary(DirectorySchema, create(DirectorySchema, { directories: [{ name: "a", digest: leaves[0] }, { name: "b", digest: leaves[1] }] })));
    const mid2 = await put(toBinary(DirectorySchema, create(DirectorySchema, { directories: [{ name: "c", digest: leaves[2] }, { name: "d", digest: leaves[3] }] })));
    const root = await put(toBinary(DirectorySchema, create(DirectorySchema, { directories: [{ name: "m1", digest: mid1 }, { name: "m2", digest: mid2 }] })));
    return root;
  }

  it("streams the whole tree breadth-first", async () => {
    const root = await buildTree();
    const dirs = [];
    for await (const r of cas.getTree({ rootDigest: root })) dirs.push(...r.directories);
    expect(dirs).toHaveLength(7);
    expect(dirs[0]!.directories.map((d) => d.name)).toEqual(["m1", "m2"]);
  });

  it("pages with page_size and page_token", async () => {
    const root = await buildTree();
    const seen: number[] = [];
    let token = "";
    let pages = 0;
    do {
      let next = "";
      for await (const r of cas.getTree({ rootDigest: root, pageSize: 3, pageToken: token })) {
        seen.push(r.directories.length);
        next = r.nextPageToken || next;
      }
      token = next;
      pages++;
    } while (token && pages < 10);
    expect(seen).toEqual([3, 3, 1]);
  });

  it("answers NOT_FOUND for a missing root and INVALID_ARGUMENT for a foreign token", async () => {
    const missing = await digestOf("no such directory " + crypto.randomUUID());
    expect(await codeOf((async () => { for await (const _ of cas.getTree({ rootDigest: missing })); })())).toBe(Code.NotFound);
    const root = await buildTree();
    expect(await codeOf((async () => { for await (const _ of cas.getTree({ rootDigest: root, pageToken: "garbage" })); })())).toBe(Code.InvalidArgument);
  });
});
