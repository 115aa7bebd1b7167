// Blobs kept in R2 when R2 or the CAS index fails: before the call reaches its target, or after
// it has acted (the answer lost on the way back). Either way the caller hears UNAVAILABLE with the
// reason (a fault to retry, not the client's data being wrong, nor a blob missing), nothing
// half-stored is reported present, and a write made again stores the blob once. A resumable
// upload keeps the parts before the one that failed, and one whose state, completion or index
// record failed finishes when resumed where QueryWriteStatus says; a failed read heals nothing away.
import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { PART_SIZE, committedBytes, uploadBlob, type WriteChunk } from "../../src/storage/upload.ts";
import type { BlobDigest } from "../../src/storage/digest.ts";
import { R2_BLOB_BYTES, admin, missing, tenantPerTest, type Tenant, type TestBlob } from "./cas-eviction-helpers.ts";
import { failingBucket, failingIndex, withBinding, type When } from "./fault-injection.ts";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { connectClient, digestOf, errorOf, grpcWebClient, pseudoRandom } from "./helpers.ts";

const setup = tenantPerTest();

async function testBlob(seed: number): Promise<TestBlob> {
  const data = pseudoRandom(R2_BLOB_BYTES + seed, seed);
  return { data, digest: await digestOf(data) };
}

const digest = (b: TestBlob): BlobDigest => ({ hash: b.digest.hash, size: b.data.byteLength });

/** The ways a blob reaches R2: a stream (ByteStream, HTTP), a sized HTTP body, a batch. */
const writes: [string, (s: BlobStore, b: TestBlob) => Promise<void>][] = [
  ["a streamed write", (s, b) => s.write(digest(b), new Blob([b.data]).stream())],
  ["a sized write", (s, b) => s.write(digest(b), new Blob([b.data]).stream(), { sized: true })],
  [
    "a batch write",
    async (s, b) => {
      const [e] = await s.writeMany([{ d: digest(b), data: b.data }]);
      if (e !== undefined) throw e;
    },
  ],
];

async function stats(t: Tenant) {
  const { blobs, bytes } = (await admin(t, "GET", "/admin/cas/stats")).body.tenants[0] ?? { blobs: 0, bytes: 0 };
  return { blobs, bytes };
}

/** Stores a 3 MiB blob for `t`, then runs `fn` with the worker's R2 reads of it breaking off mid-way. */
async function withReadsBreaking(t: Tenant, seed: number, fn: (b: TestBlob) => Promise<void>): Promise<void> {
  const data = pseudoRandom(3 * 1024 * 1024 + seed, seed);
  const b = { data, digest: await digestOf(data) };
  await new BlobStore(env, t.tenant).write(digest(b), new Blob([data]).stream());
  const key = `cas/${t.tenant}/${b.digest.hash}`;
  await withBinding("CAS", failingBucket((op, k) => op === "get" && k === key, "after"), () => fn(b));
}

describe("R2 failing a write", () => {
  for (const [name, write] of writes) {
    for (const when of ["before", "after"] as When[]) {
      it(`${name}, R2 failing ${when} the object lands: UNAVAILABLE with the reason; written again, the blob is stored once`, async () => {
        const t = setup();
        const b = await testBlob(when === "before" ? 1 : 2);
        const key = `cas/${t.tenant}/${b.digest.hash}`;
        const broken = new BlobStore(failingBucket((op, k) => op === "put" && k === key, when), t.tenant);
        const err = await errorOf(write(broken, b));
        expect(err.code).toBe(Code.Unavailable);
        expect(err.rawMessage).toMatch(new RegExp(`blob ${b.digest.hash}/${b.data.byteLength}: storing it failed \\(injected: R2 put .*\\); nothing was stored`));
        // Whether or not the object landed, the index never heard of it: FindMissing asks for it.
        expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));

        await write(new BlobStore(env, t.tenant), b);
        expect(await missing(t, [b])).toEqual(new Set());
        expect(await stats(t)).toEqual({ blobs: 1, bytes: b.data.byteLength });
        const r = await t.cas.batchReadBlobs({ digests: [b.digest] });
        expect(r.responses[0]!.data).toEqual(b.data);
      });
    }
  }
});

describe("R2 failing a part of a resumable upload", () => {
  /** The blob from `from` on, in 1 MiB writes, finish_write on the last. */
  async function* from(data: Uint8Array, start: number): AsyncGenerator<WriteChunk> {
    for (let at = start; at < data.byteLength; at += 1 << 20) {
      const end = Math.min(at + (1 << 20), data.byteLength);
      yield { offset: at, data: data.subarray(at, end), finish: end === data.byteLength };
    }
  }

  for (const when of ["before", "after"] as When[]) {
    it(`R2 failing the second part ${when} it lands: UNAVAILABLE, committed_size stays at the first; resumed there, the blob is whole and stored once`, async () => {
      const t = setup();
      const data = pseudoRandom(2 * PART_SIZE + 10, when === "before" ? 3 : 4);
      const b = { data, digest: await digestOf(data) };
      const uploadId = crypto.randomUUID();
      // RESUMABLE_UPLOAD_ABOVE_BYTES is 8 MiB in these tests: this upload goes in 8 MiB parts.
      let parts = 0;
      const secondFails = new BlobStore(failingBucket((op) => op === "uploadPart" && ++parts === 2, when), t.tenant);
      const err = await errorOf(uploadBlob(secondFails, uploadId, digest(b), 0, from(data, 0)));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(new RegExp(`part 2 was not stored \\(injected: R2 uploadPart 2 .*\\); committed_size stays ${PART_SIZE}: resume there`));
      expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));

      expect(await uploadBlob(new BlobStore(env, t.tenant), uploadId, digest(b), PART_SIZE, from(data, PART_SIZE))).toEqual({ committed: data.byteLength, done: true });
      expect(await missing(t, [b])).toEqual(new Set());
      expect(await stats(t)).toEqual({ blobs: 1, bytes: data.byteLength });
      const r = await new BlobStore(env, t.tenant).read(digest(b));
      expect(new Uint8Array(await new Response(r.body).arrayBuffer())).toEqual(data);
    });
  }
});

describe("a resumable upload's state and completion failing", () => {
  async function* from(data: Uint8Array, start: number): AsyncGenerator<WriteChunk> {
    if (start === data.byteLength) yield { offset: start, data: new Uint8Array(0), finish: true };
    for (let at = start; at < data.byteLength; at += 1 << 20) {
      const end = Math.min(at + (1 << 20), data.byteLength);
      yield { offset: at, data: data.subarray(at, end), finish: end === data.byteLength };
    }
  }
  const big = async (seed: number) => {
    const data = pseudoRandom(2 * PART_SIZE + 10, seed);
    return { data, digest: await digestOf(data) };
  };
  /** Resumes where the upload's state says (as a client does after QueryWriteStatus); the blob must come out whole, stored once. */
  async function resumeAndCheck(t: Tenant, uploadId: string, b: TestBlob) {
    const store = new BlobStore(env, t.tenant);
    const at = (await committedBytes(store, uploadId, digest(b))) ?? 0;
    expect(await uploadBlob(store, uploadId, digest(b), at, from(b.data, at))).toEqual({ committed: b.data.byteLength, done: true });
    expect(await missing(t, [b])).toEqual(new Set());
    expect(await stats(t)).toEqual({ blobs: 1, bytes: b.data.byteLength });
    const r = await store.read(digest(b));
    expect(new Uint8Array(await new Response(r.body).arrayBuffer())).toEqual(b.data);
    return at;
  }

  it("its state cannot be read: UNAVAILABLE naming the upload, for QueryWriteStatus and Write alike", async () => {
    const t = setup();
    const b = await big(11);
    const broken = new BlobStore(failingIndex(["getUpload"], "before"), t.tenant);
    for (const p of [committedBytes(broken, "u1", digest(b)), uploadBlob(broken, "u1", digest(b), 0, from(b.data, 0))]) {
      const err = await errorOf(p);
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the CAS index could not read the state of upload u1 \(injected: .*\); retry/);
    }
  });

  for (const when of ["before", "after"] as When[]) {
    it(`recording the upload's start fails ${when} it lands: UNAVAILABLE; the Write made again from 0 completes`, async () => {
      const t = setup();
      const b = await big(when === "before" ? 18 : 19);
      const uploadId = crypto.randomUUID();
      const broken = new BlobStore(failingIndex((m) => m === "putUpload", when), t.tenant);
      const err = await errorOf(uploadBlob(broken, uploadId, digest(b), 0, from(b.data, 0)));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(new RegExp(`the CAS index could not record the start of upload ${uploadId} \\(injected: .*\\); retry`));
      expect(await resumeAndCheck(t, uploadId, b)).toBe(0);
    });

    it(`recording part 2 fails ${when} it lands: UNAVAILABLE; resumed where QueryWriteStatus says, the blob is whole and stored once`, async () => {
      const t = setup();
      const b = await big(when === "before" ? 12 : 13);
      const uploadId = crypto.randomUUID();
      let records = 0; // the start, then one per part
      const broken = new BlobStore(failingIndex((m) => m === "putUpload" && ++records === 3, when), t.tenant);
      const err = await errorOf(uploadBlob(broken, uploadId, digest(b), 0, from(b.data, 0)));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/part 2 is stored but recording it failed \(injected: .*\); call QueryWriteStatus and resume at its committed_size/);
      expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));
      expect(await resumeAndCheck(t, uploadId, b)).toBe(when === "before" ? PART_SIZE : 2 * PART_SIZE);
    });
  }

  it("R2 completing the upload but its answer lost: the Write succeeds all the same", async () => {
    const t = setup();
    const b = await big(14);
    const store = new BlobStore(failingBucket((op) => op === "complete", "after"), t.tenant);
    expect(await uploadBlob(store, crypto.randomUUID(), digest(b), 0, from(b.data, 0))).toEqual({ committed: b.data.byteLength, done: true });
    expect(await missing(t, [b])).toEqual(new Set());
    const r = await new BlobStore(env, t.tenant).read(digest(b));
    expect(new Uint8Array(await new Response(r.body).arrayBuffer())).toEqual(b.data);
  });

  it("R2 refusing to complete: UNAVAILABLE; resumed at the full size, it completes", async () => {
    const t = setup();
    const b = await big(15);
    const uploadId = crypto.randomUUID();
    const err = await errorOf(uploadBlob(new BlobStore(failingBucket((op) => op === "complete", "before"), t.tenant), uploadId, digest(b), 0, from(b.data, 0)));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(/completing the upload failed \(injected: R2 complete of .*\); retry/);
    expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));
    expect(await resumeAndCheck(t, uploadId, b)).toBe(b.data.byteLength);
  });

  it("the index record failing after R2 completed the blob: UNAVAILABLE, and the resumed upload finishes (it was stuck on the completed upload)", async () => {
    const t = setup();
    const b = await big(16);
    const uploadId = crypto.randomUUID();
    const err = await errorOf(uploadBlob(new BlobStore(failingIndex(["add"], "before"), t.tenant), uploadId, digest(b), 0, from(b.data, 0)));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(/the CAS index could not record/);
    expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));
    expect(await resumeAndCheck(t, uploadId, b)).toBe(b.data.byteLength);
  });

  it("removing a finished upload's state fails: the Write still succeeds", async () => {
    const t = setup();
    const b = await big(17);
    const store = new BlobStore(failingIndex(["deleteUpload"], "before"), t.tenant);
    expect(await uploadBlob(store, crypto.randomUUID(), digest(b), 0, from(b.data, 0))).toEqual({ committed: b.data.byteLength, done: true });
    expect(await missing(t, [b])).toEqual(new Set());
  });
});

describe("R2 failing a read", () => {
  it("a read, by digest or by hash, whose R2 call fails: UNAVAILABLE with the reason, and the blob is not healed away", async () => {
    const t = setup();
    const b = await testBlob(5);
    await new BlobStore(env, t.tenant).write(digest(b), new Blob([b.data]).stream());
    const key = `cas/${t.tenant}/${b.digest.hash}`;
    const broken = new BlobStore(failingBucket((op, k) => (op === "get" || op === "head") && k === key), t.tenant);
    const d = digest(b);
    for (const [what, call] of [
      ["read", () => broken.read(d)],
      ["read of nothing", () => broken.read(d, d.size)],
      ["readByHash", () => broken.readByHash(d.hash)],
      ["sizeOf", () => broken.sizeOf(d.hash)],
    ] as const) {
      const err = await errorOf(call());
      expect(err, what).toMatchObject({ code: Code.Unavailable, rawMessage: expect.stringMatching(new RegExp(`blob ${d.hash}: R2 could not be read \\(injected: R2 (get|head)`)) });
    }
    expect(await missing(t, [b])).toEqual(new Set());
    const r = await new BlobStore(env, t.tenant).read(d);
    expect(new Uint8Array(await new Response(r.body).arrayBuffer())).toEqual(b.data);
  });
});

describe("the CAS index failing", () => {
  for (const when of ["before", "after"] as When[]) {
    it(`a lookup a shard fails ${when} answering: UNAVAILABLE naming the shard, and nothing is reported missing or present`, async () => {
      const t = setup();
      const b = await testBlob(6);
      await new BlobStore(env, t.tenant).write(digest(b), new Blob([b.data]).stream());
      const broken = new BlobStore(failingIndex(["present"], when), t.tenant);
      const err = await errorOf(broken.index.missing([digest(b)]));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the CAS index could not look up 1 blob\(s\) in shard \d+ \(injected: CAS index present failed .*\); retry/);
      expect(await missing(t, [b])).toEqual(new Set());
    });
  }
});

describe("R2 breaking off a ByteStream read", () => {
  for (const [surface, client] of [
    ["gRPC-web (the read lane)", () => grpcWebClient(ByteStream)],
    ["Connect (the router)", () => connectClient(ByteStream)],
  ] as const) {
    it(`${surface}: the read ends UNAVAILABLE naming the blob, after whole messages only, never as a short blob`, async () => {
      const t = setup();
      await withReadsBreaking(t, 7, async (b) => {
        let got = 0;
        const err = await errorOf(
          (async () => {
            for await (const r of client().read({ resourceName: `blobs/${b.digest.hash}/${b.data.byteLength}` }, { headers: t.headers })) got += r.data.byteLength;
          })(),
        );
        expect(err.code).toBe(Code.Unavailable);
        expect(err.rawMessage).toMatch(new RegExp(`reading blob ${b.digest.hash}/${b.data.byteLength} broke off \\(injected: R2 get`));
        expect(got).toBeLessThan(b.data.byteLength);
      });
    });
  }
});

describe("R2 breaking off an HTTP read", () => {
  for (const path of ["/cache/cas/{hash}", "/blobs/{hash}/{size}"]) {
    it(`GET ${path}: the response breaks off too, never a short body that ends cleanly`, async () => {
      const t = setup();
      await withReadsBreaking(t, 8, async (b) => {
        const res = await SELF.fetch(`http://kiln${path.replace("{hash}", b.digest.hash).replace("{size}", String(b.data.byteLength))}`, { headers: t.headers });
        expect(res.status).toBe(200);
        expect(res.headers.get("content-length")).toBe(String(b.data.byteLength));
        const body = await res.arrayBuffer().then(
          (x) => x.byteLength,
          (e: unknown) => e,
        );
        expect(body).toBeInstanceOf(Error);
      });
    });
  }
});

describe("a CAS index shard failing, as each surface answers it", () => {
  /** Runs `fn` with the worker's CAS index failing `methods` before they reach a shard. */
  const withFailingIndex = <T>(methods: string[], fn: () => Promise<T>) => withBinding("CAS_INDEX", failingIndex(methods, "before"), fn);

  for (const [surface, client] of [
    ["gRPC-web (the FindMissing lane)", () => grpcWebClient(ContentAddressableStorage)],
    ["Connect (the router)", () => connectClient(ContentAddressableStorage)],
  ] as const) {
    it(`FindMissingBlobs over ${surface}: UNAVAILABLE with the reason`, async () => {
      const t = setup();
      const b = await testBlob(9);
      const err = await withFailingIndex(["present"], () => errorOf(client().findMissingBlobs({ blobDigests: [b.digest] }, { headers: t.headers })));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the CAS index could not look up 1 blob\(s\) in shard \d+ \(injected: .*\); retry/);
    });
  }

  it("an HTTP cache PUT whose record fails: 503 with the reason; PUT again, it is stored once", async () => {
    const t = setup();
    const b = await testBlob(10);
    const put = () => SELF.fetch(`http://kiln/cache/cas/${b.digest.hash}`, { method: "PUT", headers: t.headers, body: b.data });
    const res = await withFailingIndex(["add"], put);
    expect(res.status).toBe(503);
    expect(await res.text()).toMatch(/the CAS index could not record 1 blob\(s\) in shard \d+ \(injected: .*\); retry/);
    expect(await missing(t, [b])).toEqual(new Set([b.digest.hash]));
    expect((await put()).status).toBe(200);
    expect(await stats(t)).toEqual({ blobs: 1, bytes: b.data.byteLength });
  });
});

describe("R2 failing one read of a batch", () => {
  it("BatchReadBlobs: that blob's status is UNAVAILABLE with the reason, the others are read", async () => {
    const t = setup();
    const [a, b] = [await testBlob(11), await testBlob(12)];
    for (const x of [a, b]) await new BlobStore(env, t.tenant).write(digest(x), new Blob([x.data]).stream());
    const key = `cas/${t.tenant}/${b.digest.hash}`;
    const r = await withBinding("CAS", failingBucket((op, k) => op === "get" && k === key), () => t.cas.batchReadBlobs({ digests: [a.digest, b.digest] }));
    expect(r.responses[0]).toMatchObject({ status: { code: 0 }, data: a.data });
    expect(r.responses[1]!.status).toMatchObject({ code: Code.Unavailable, message: expect.stringMatching(/R2 could not be read \(injected: R2 get/) });
    expect(r.responses[1]!.data).toHaveLength(0);
  });
});
