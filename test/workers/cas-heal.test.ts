// A read that finds no R2 object drops the blob's index row, on every read path, so FindMissing
// stops saying "present" and the client uploads it again (the object was deleted behind Kiln's
// back: an R2 lifecycle rule, an operator, a crash between eviction's two steps).
import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { DirectorySchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { EMPTY_SHA256 } from "../../src/storage/digest.ts";
import { connectClient, codeOf, digestOf } from "./helpers.ts";
import { R2_BLOB_BYTES, admin, blobsInShard, missing, objectExists, store, tenantPerTest, type Tenant, type TestBlob } from "./cas-eviction-helpers.ts";

const setup = tenantPerTest();

/** A stored blob whose object then disappears from R2 while its index row stays. */
async function orphanedRow(t: Tenant, tag: string): Promise<TestBlob> {
  const [b] = await blobsInShard(`${t.tenant}-${tag}`, "", 1, R2_BLOB_BYTES);
  await store(t, [b!]);
  await env.CAS.delete(`cas/${t.tenant}/${b!.digest.hash}`);
  expect(await missing(t, [b!])).toEqual(new Set()); // the index still says present
  return b!;
}

const fetchStatus = async (t: Tenant, method: string, path: string) => {
  const res = await SELF.fetch(`http://kiln${path}`, { method, headers: t.headers });
  await res.body?.cancel();
  return res.status;
};

const paths: [string, (t: Tenant, b: TestBlob) => Promise<unknown>][] = [
  [
    "ByteStream.Read",
    async (t, b) => {
      const bs = connectClient(ByteStream, t.headers);
      return codeOf((async () => {
        for await (const _ of bs.read({ resourceName: `blobs/${b.digest.hash}/${b.digest.sizeBytes}` }));
      })());
    },
  ],
  [
    "BatchReadBlobs",
    async (t, b) => (await t.cas.batchReadBlobs({ digests: [b.digest] })).responses[0]!.status?.code,
  ],
  ["GetTree", async (t, b) => codeOf((async () => {
    for await (const _ of t.cas.getTree({ rootDigest: b.digest }));
  })())],
  ["HTTP cache GET", (t, b) => fetchStatus(t, "GET", `/cache/cas/${b.digest.hash}`)],
  ["HTTP cache HEAD", (t, b) => fetchStatus(t, "HEAD", `/cache/cas/${b.digest.hash}`)],
  ["blob HTTP GET", (t, b) => fetchStatus(t, "GET", `/blobs/${b.digest.hash}/${b.digest.sizeBytes}`)],
];

const FOUND: Record<string, unknown> = {
  "ByteStream.Read": "ok",
  BatchReadBlobs: 0, // google.rpc.Code.OK
  GetTree: "ok",
  "HTTP cache GET": 200,
  "HTTP cache HEAD": 200,
  "blob HTTP GET": 200,
};

const NOT_FOUND: Record<string, unknown> = {
  "ByteStream.Read": Code.NotFound,
  BatchReadBlobs: Code.NotFound,
  GetTree: Code.NotFound,
  "HTTP cache GET": 404,
  "HTTP cache HEAD": 404,
  "blob HTTP GET": 404,
};

describe("a read that finds no object heals the index", () => {
  for (const [name, read] of paths) {
    it(`${name}: answers not found and the row is gone`, async () => {
      const t = setup();
      const b = await orphanedRow(t, name);
      expect(await read(t, b)).toBe(NOT_FOUND[name]);
      expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));
      const stats = await admin(t, "GET", "/admin/cas/stats");
      expect(stats.body.tenants[0].counters.healed).toBe(1);
      // The client's answer to "missing": upload it again; it is then present and readable.
      await store(t, [b]);
      expect(await missing(t, [b])).toEqual(new Set());
      expect((await t.cas.batchReadBlobs({ digests: [b.digest] })).responses[0]!.data).toEqual(b.data);
    });
  }

  it("a blob written again after the read began keeps its row, even a second after", async () => {
    const t = setup();
    // Stored in R2 (a small blob has no object to lose, and is never healed).
    const [b] = await blobsInShard(t.tenant, "", 1, R2_BLOB_BYTES);
    await store(t, [b!]);
    // The read began (and found nothing) an hour ago, or a second ago; the row was written since.
    await t.index.forget(b!.digest.hash, Date.now() - 3600_000);
    await t.index.forget(b!.digest.hash, Date.now() - 1000);
    expect(await missing(t, [b!])).toEqual(new Set());
    expect((await t.cas.batchReadBlobs({ digests: [b!.digest] })).responses[0]!.data).toEqual(b!.data);
  });
});

describe("a small blob has no object to lose", () => {
  for (const [name, read] of paths) {
    it(`${name}: reads it from the index, where no heal removes it`, async () => {
      const t = setup();
      // GetTree needs its root to be a Directory.
      const [b] = name === "GetTree" ? [await emptyDirectory()] : await blobsInShard(`${t.tenant}-${name}`, "", 1, 100);
      await store(t, [b!]);
      expect(await objectExists(t, b!)).toBe(false);
      expect(await read(t, b!)).toBe(FOUND[name]);
      // A read that began before the blob was written and found no object: the row stays.
      await t.index.forget(b!.digest.hash, Date.now() - 3600_000);
      await t.index.forget(b!.digest.hash, Date.now() + 3600_000);
      expect(await missing(t, [b!])).toEqual(new Set());
      expect(await read(t, b!)).toBe(FOUND[name]);
    });
  }
});

/** A Directory with one (empty) file, as a test blob: small, so kept in the index. */
async function emptyDirectory(): Promise<TestBlob> {
  const data = toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: `f-${crypto.randomUUID()}`, digest: { hash: EMPTY_SHA256, sizeBytes: 0n } }] }));
  return { data, digest: await digestOf(data) };
}
