// Request limits: at each limit the call works, one over it is INVALID_ARGUMENT naming the limit;
// bodies are not read before the caller is authenticated, and are read only up to their limit.
import { SELF, env } from "cloudflare:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ContentAddressableStorage,
  DirectorySchema,
  type Directory,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { MAX_BATCH_ENTRIES, MAX_FIND_MISSING_DIGESTS, MAX_LIST_OFFSET } from "../../src/services/limits.ts";
import { SMALL_BLOB_MAX_BYTES } from "../../src/shared/small-blob-size.ts";
import { CasIndex } from "../../src/storage/cas-index.ts";
import { scrape } from "./metrics-helpers.ts";
import { connectClient, digestOf, errorOf, uniqueInstance } from "./helpers.ts";

const EMPTY = { hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sizeBytes: 0n };
const cas = connectClient(ContentAddressableStorage);
const fakeDigest = (i: number) => ({ hash: i.toString(16).padStart(64, "0"), sizeBytes: 1n });

describe("CAS entry limits", () => {
  it(`FindMissingBlobs: ${MAX_FIND_MISSING_DIGESTS} digests work, one more is INVALID_ARGUMENT naming MAX_FIND_MISSING_DIGESTS`, async () => {
    const digests = Array.from({ length: MAX_FIND_MISSING_DIGESTS }, (_, i) => fakeDigest(i));
    const r = await cas.findMissingBlobs({ instanceName: "limits", blobDigests: digests });
    expect(r.missingBlobDigests).toHaveLength(MAX_FIND_MISSING_DIGESTS);
    const e = await errorOf(cas.findMissingBlobs({ instanceName: "limits", blobDigests: [...digests, fakeDigest(-1 >>> 0)] }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/MAX_FIND_MISSING_DIGESTS/);
  });

  it("FindMissingBlobs: Bazel's largest call (its 1 MiB message, 14,979 digests) works", async () => {
    const digests = Array.from({ length: 14_979 }, (_, i) => fakeDigest(i));
    expect((await cas.findMissingBlobs({ instanceName: "limits", blobDigests: digests })).missingBlobDigests).toHaveLength(14_979);
  });

  it(`BatchUpdateBlobs and BatchReadBlobs: ${MAX_BATCH_ENTRIES} entries work, one more is INVALID_ARGUMENT naming MAX_BATCH_ENTRIES`, async () => {
    // Size-0 entries weigh nothing against max_batch_total_size_bytes: only the entry cap stops them.
    const updates = Array.from({ length: MAX_BATCH_ENTRIES }, () => ({ digest: EMPTY, data: new Uint8Array() }));
    const up = await cas.batchUpdateBlobs({ instanceName: "limits", requests: updates });
    expect(up.responses.filter((r) => r.status?.code === 0)).toHaveLength(MAX_BATCH_ENTRIES);
    let e = await errorOf(cas.batchUpdateBlobs({ instanceName: "limits", requests: [...updates, updates[0]!] }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/MAX_BATCH_ENTRIES/);

    const reads = Array.from({ length: MAX_BATCH_ENTRIES }, (_, i) => fakeDigest(i));
    expect((await cas.batchReadBlobs({ instanceName: "limits", digests: reads })).responses).toHaveLength(MAX_BATCH_ENTRIES);
    e = await errorOf(cas.batchReadBlobs({ instanceName: "limits", digests: [...reads, fakeDigest(-1 >>> 0)] }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/MAX_BATCH_ENTRIES/);
  });
});

describe("GetTree", () => {
  // The default (5,000) is set lower here: 5,000 directories over 4 KiB take a minute to write and read locally.
  const MAX_TREE_READS_PER_CALL = 40;
  beforeAll(() => {
    env.MAX_TREE_READS_PER_CALL = String(MAX_TREE_READS_PER_CALL);
  });
  afterAll(() => {
    delete env.MAX_TREE_READS_PER_CALL;
  });

  /** Stores a root naming `n` children whose Directory messages are about `childBytes` long. */
  async function tree(n: number, childBytes: number) {
    const instanceName = uniqueInstance("tree");
    const children: Directory[] = Array.from({ length: n }, (_, i) =>
      create(DirectorySchema, { files: [{ name: `f${i}`.padEnd(childBytes, "x"), digest: EMPTY }] }),
    );
    const childData = children.map((d) => toBinary(DirectorySchema, d));
    const childDigests = await Promise.all(childData.map((b) => digestOf(b)));
    const root = toBinary(DirectorySchema, create(DirectorySchema, { directories: childDigests.map((digest, i) => ({ name: `d${String(i).padStart(5, "0")}`, digest })) }));
    const rootDigest = await digestOf(root);
    const all = [...childData.map((data, i) => ({ digest: childDigests[i]!, data })), { digest: rootDigest, data: root }];
    for (let i = 0; i < all.length; i += 500) {
      const r = await cas.batchUpdateBlobs({ instanceName, requests: all.slice(i, i + 500) });
      expect(r.responses.every((x) => x.status?.code === 0)).toBe(true);
    }
    const read = async (pageSize: number, pageToken = "") => {
      let dirs = 0;
      let token = "";
      for await (const m of cas.getTree({ instanceName, rootDigest, pageSize, pageToken })) {
        dirs += m.directories.length;
        token = m.nextPageToken;
      }
      return { dirs, token };
    };
    return { read };
  }

  it("spends at most MAX_TREE_READS_PER_CALL reads per call (one per directory over 4 KiB), then hands out a page token", async () => {
    const { read } = await tree(60, SMALL_BLOB_MAX_BYTES + 100);
    // Unset and over-large page sizes both stop at the limit: the small root's index call and 39
    // children read from R2. The token resumes where it stopped.
    for (const pageSize of [0, MAX_TREE_READS_PER_CALL * 10]) {
      const first = await read(pageSize);
      expect(first.dirs).toBe(MAX_TREE_READS_PER_CALL);
      expect(first.token).not.toBe("");
      expect(await read(pageSize, first.token)).toEqual({ dirs: 21, token: "" });
    }
  });

  it("reads small directories (most, by count) in batches of one index call per shard: 600 of them stream whole within 40 reads", async () => {
    // The root (one call), then 500 and 100 children (at most one call per shard, 16 shards, each).
    const { read } = await tree(600, 40);
    expect(await read(0)).toEqual({ dirs: 601, token: "" });
    // Pages still end at page_size, each resumed from its token.
    let token = "";
    let dirs = 0;
    let pages = 0;
    do {
      const page = await read(250, token);
      dirs += page.dirs;
      token = page.token;
      pages++;
    } while (token);
    expect([dirs, pages]).toEqual([601, 3]);
  });
});

describe("reads from R2 of small blobs an older Kiln stored there", () => {
  const TENANT = "default";
  /** `n` small blobs stored the old way: an R2 object and an index row without bytes. */
  async function legacySmall(n: number, make: (i: number) => Uint8Array) {
    const blobs = await Promise.all(Array.from({ length: n }, async (_, i) => ({ data: make(i), digest: await digestOf(make(i)) })));
    for (let i = 0; i < blobs.length; i += 50) await Promise.all(blobs.slice(i, i + 50).map((b) => env.CAS.put(`cas/${TENANT}/${b.digest.hash}`, b.data)));
    await new CasIndex(env, TENANT).add(blobs.map((b) => ({ hash: b.digest.hash, size: Number(b.digest.sizeBytes) })));
    return blobs;
  }
  const sumOf = (m: Map<string, number>, request: string) =>
    [...m].filter(([k]) => k.includes(`request="${request}"`) && (k.startsWith('kiln_r2_operations_total{class="B",op="get"') || (k.startsWith("kiln_do_requests_total{") && k.includes('object="CAS_INDEX"')))).reduce((n, [, v]) => n + v, 0);

  it("GetTree counts them against MAX_TREE_READS_PER_CALL too: a page token, not a subrequest over", async () => {
    env.MAX_TREE_READS_PER_CALL = "40";
    try {
      const instanceName = uniqueInstance("legacy-tree");
      const nonce = crypto.randomUUID();
      const children = await legacySmall(60, (i) => toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: `${nonce}-${i}`, digest: EMPTY }] })));
      const root = toBinary(DirectorySchema, create(DirectorySchema, { directories: children.map((c, i) => ({ name: `d${String(i).padStart(3, "0")}`, digest: c.digest })) }));
      const rootDigest = await digestOf(root);
      expect((await cas.batchUpdateBlobs({ instanceName, requests: [{ digest: rootDigest, data: root }] })).responses[0]!.status?.code).toBe(0);
      let token = "";
      let dirs = 0;
      let calls = 0;
      do {
        const before = await scrape();
        let last = "";
        for await (const m of cas.getTree({ instanceName, rootDigest, pageToken: token })) {
          dirs += m.directories.length;
          last = m.nextPageToken;
        }
        const after = await scrape();
        expect(sumOf(after, "connect ContentAddressableStorage.GetTree") - sumOf(before, "connect ContentAddressableStorage.GetTree")).toBeLessThanOrEqual(40);
        token = last;
        calls++;
      } while (token && calls < 10);
      expect([dirs, token]).toEqual([61, ""]);
      expect(calls).toBeGreaterThan(1);
    } finally {
      delete env.MAX_TREE_READS_PER_CALL;
    }
  });

  it("BatchReadBlobs reads at most 1,000 of them from R2; the rest are UNAVAILABLE, to retry", { timeout: 60_000 }, async () => {
    const nonce = crypto.randomUUID();
    const blobs = await legacySmall(1_050, (i) => new TextEncoder().encode(`legacy ${nonce} ${i}`));
    const before = await scrape();
    const r = await cas.batchReadBlobs({ instanceName: "limits", digests: blobs.map((b) => b.digest) });
    const after = await scrape();
    const codes = r.responses.map((x) => x.status?.code ?? 0);
    expect(codes.filter((c) => c === 0)).toHaveLength(1_000);
    expect(codes.filter((c) => c === Code.Unavailable)).toHaveLength(50);
    expect(r.responses.filter((x) => (x.status?.code ?? 0) === 0).every((x) => new TextDecoder().decode(x.data).startsWith(`legacy ${nonce}`))).toBe(true);
    const gets = (m: Map<string, number>) => m.get('kiln_r2_operations_total{class="B",op="get",request="connect ContentAddressableStorage.BatchReadBlobs"}') ?? 0;
    expect(gets(after) - gets(before)).toBe(1_000);
  });
});

describe("GetTree on deep and shared (diamond) trees", () => {
  it("returns every directory once, however deep and however often it is referenced", async () => {
    const instanceName = uniqueInstance("deep");
    // A chain 200 deep whose every level also names the level below twice (a diamond each time).
    const blobs: { digest: { hash: string; sizeBytes: bigint }; data: Uint8Array }[] = [];
    let below = toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: "leaf", digest: EMPTY }] }));
    let belowDigest = await digestOf(below);
    blobs.push({ digest: belowDigest, data: below });
    for (let i = 0; i < 200; i++) {
      below = toBinary(DirectorySchema, create(DirectorySchema, { directories: [{ name: "a", digest: belowDigest }, { name: "b", digest: belowDigest }] }));
      belowDigest = await digestOf(below);
      blobs.push({ digest: belowDigest, data: below });
    }
    expect((await cas.batchUpdateBlobs({ instanceName, requests: blobs })).responses.every((r) => r.status?.code === 0)).toBe(true);
    let dirs = 0;
    for await (const m of cas.getTree({ instanceName, rootDigest: belowDigest })) dirs += m.directories.length;
    expect(dirs).toBe(201);
  });
});

describe("ResultStore offsets", () => {
  const download = connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*" });
  const QUERY = 'name = "invocations/none"';
  it(`offset ${MAX_LIST_OFFSET} works, one more is INVALID_ARGUMENT naming MAX_LIST_OFFSET`, async () => {
    const ok = await download.searchInvocations({ query: QUERY, pageStart: { case: "offset", value: BigInt(MAX_LIST_OFFSET) } });
    expect(ok.invocations).toEqual([]);
    const e = await errorOf(download.searchInvocations({ query: QUERY, pageStart: { case: "offset", value: BigInt(MAX_LIST_OFFSET + 1) } }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/MAX_LIST_OFFSET/);
  });
});

/** A body that never ends: a server that tried to read it whole would never answer. */
const endless = () =>
  new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(new Uint8Array(64 * 1024));
    },
  });

/** `bytes` of body without a Content-Length (chunked). */
const chunked = (bytes: number) => {
  let left = bytes;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (left <= 0) return c.close();
      const n = Math.min(left, 256 * 1024);
      left -= n;
      c.enqueue(new Uint8Array(n).fill(0x20));
    },
  });
};

describe("bodies and authentication", () => {
  const KEY = "limits-key-0123456789-0123456789-abcdef";
  beforeAll(() => {
    env.API_KEYS = JSON.stringify([{ key: KEY, name: "limits" }]);
  });
  afterAll(() => {
    delete env.API_KEYS;
  });

  it("a caller without a key is refused before its (endless) body is read: REST, HTTP cache AC, Connect", async () => {
    const hash = "b".repeat(64);
    const calls: [string, string, Record<string, string>][] = [
      ["POST", "http://kiln/v2/limits/blobs:findMissing", { "content-type": "application/json" }],
      ["PUT", `http://kiln/cache/limits/ac/${hash}`, {}],
      ["POST", `http://kiln/${ContentAddressableStorage.typeName}/FindMissingBlobs`, { "content-type": "application/proto" }],
    ];
    for (const [method, url, headers] of calls) {
      const res = await SELF.fetch(url, { method, headers, body: endless() });
      expect(res.status, url).toBe(401);
      await res.body?.cancel();
    }
  });

  it("an authenticated body without Content-Length is read only up to its limit, then refused naming it", async () => {
    const auth = { authorization: `Bearer ${KEY}` };
    let res = await SELF.fetch("http://kiln/v2/limits/blobs:findMissing", {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: chunked(9 * 1024 * 1024),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/MAX_JSON_BODY/);
    res = await SELF.fetch(`http://kiln/cache/limits/ac/${"c".repeat(64)}`, { method: "PUT", headers: auth, body: chunked(17 * 1024 * 1024) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/MAX_ACTION_RESULT_BYTES/);
  });
});
