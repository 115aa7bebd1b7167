// The remote cache as a native gRPC client sees it: real @grpc/grpc-js clients (proto-loader, no
// generated code) against the h2c bridge in front of the worker, covering every CAS, ActionCache,
// Capabilities and ByteStream method, resumable and 1 GiB streams, and API keys.
import { createCipheriv, createHash, randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { peakRss, sampleRss, startStack, type Stack } from "./stack.ts";
import {
  auth,
  codeOf,
  connect,
  digestOf,
  encode,
  errorOf,
  serverStream,
  sha256,
  unary,
  type Clients,
  type Digest,
  grpc,
} from "./grpc-client.ts";

const MiB = 1024 * 1024;
const PART = 8 * MiB; // the worker's multipart part size: resumable writes commit at these boundaries
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// ---- deterministic data: AES-128-CTR keystream of a seed, addressable at any 16-byte offset ----

/** `length` bytes of the stream for `seed` starting at `offset` (a multiple of 16), in chunks. */
function* keystream(seed: Buffer, offset: number, length: number, chunk = MiB): Generator<Buffer> {
  if (offset % 16 !== 0) throw new Error("offset must be a multiple of 16");
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(offset / 16), 8);
  const cipher = createCipheriv("aes-128-ctr", seed, iv);
  const zeros = Buffer.alloc(chunk);
  for (let done = 0; done < length; ) {
    const n = Math.min(chunk, length - done);
    yield cipher.update(n === chunk ? zeros : zeros.subarray(0, n));
    done += n;
  }
}

function hashOfStream(seed: Buffer, length: number): string {
  const h = createHash("sha256");
  for (const c of keystream(seed, 0, length)) h.update(c);
  return h.digest("hex");
}

const blobResource = (instance: string, d: Digest) => `${instance ? instance + "/" : ""}blobs/${d.hash}/${d.size_bytes}`;
const uploadResource = (instance: string, d: Digest, uuid = randomUUID()) =>
  `${instance ? instance + "/" : ""}uploads/${uuid}/blobs/${d.hash}/${d.size_bytes}`;

const withTimeout = <T>(p: Promise<T>, ms: number, what: string) => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(what)), ms))),
  ]);
};

// ---- ByteStream helpers over grpc-js streams ----

interface WriteOptions {
  md?: grpc.Metadata;
  /** Offset of the first chunk (resuming). */
  offset?: number;
  /** Stop after sending this many bytes and cancel the call (a dropped stream). */
  cancelAfter?: number;
  /** Called once `cancelAfter` bytes are sent, before cancelling. */
  beforeCancel?: () => Promise<void>;
  /** Send finish_write on the last chunk (default true). */
  finish?: boolean;
}

/** One ByteStream.Write call fed from `chunks`, honouring backpressure; resolves with the response. */
function write(bs: Clients["bytestream"], resource: string, chunks: Iterable<Uint8Array>, opts: WriteOptions = {}) {
  let offset = opts.offset ?? 0;
  let resolveResponse!: (v: { committed_size: string }) => void;
  let rejectResponse!: (e: grpc.ServiceError) => void;
  const response = new Promise<{ committed_size: string }>((res, rej) => {
    resolveResponse = res;
    rejectResponse = rej;
  });
  let answered = false;
  const call: grpc.ClientWritableStream<any> = bs.write(opts.md ?? new grpc.Metadata(), (err: grpc.ServiceError | null, res: any) => {
    answered = true;
    if (err) rejectResponse(err);
    else resolveResponse(res);
  });
  const sent = (async () => {
    const it = chunks[Symbol.iterator]();
    let sentBytes = 0;
    let cur = it.next();
    let first = true;
    while (!cur.done) {
      if (answered) return sentBytes; // the server completed early (or failed): stop sending
      const next = it.next();
      const data = cur.value;
      const last = next.done === true;
      const msg = {
        resource_name: first ? resource : "",
        write_offset: String(offset),
        data,
        finish_write: last && opts.finish !== false,
      };
      first = false;
      offset += data.byteLength;
      sentBytes += data.byteLength;
      if (!call.write(msg)) await new Promise<void>((r) => call.once("drain", r));
      if (opts.cancelAfter !== undefined && sentBytes >= opts.cancelAfter) {
        await opts.beforeCancel?.();
        call.cancel();
        return sentBytes;
      }
      cur = next;
    }
    if (opts.finish !== false) call.end();
    return sentBytes;
  })();
  sent.catch(() => {}); // a caller that does not await `sent` still sees failures through `response`
  return { call, response, sent };
}

/** Reads a blob, hashing as it goes; keeps the bytes only if `keep`. */
function read(bs: Clients["bytestream"], resource: string, offset = 0, limit = 0, md = new grpc.Metadata(), keep = true) {
  return new Promise<{ size: number; hash: string; data: Buffer; messages: number }>((resolve, reject) => {
    const h = createHash("sha256");
    const parts: Buffer[] = [];
    let size = 0;
    let messages = 0;
    const call = bs.read({ resource_name: resource, read_offset: String(offset), read_limit: String(limit) }, md);
    call.on("data", (m: { data: Buffer }) => {
      messages++;
      size += m.data.byteLength;
      h.update(m.data);
      if (keep) parts.push(m.data);
    });
    call.on("error", reject);
    call.on("end", () => resolve({ size, hash: h.digest("hex"), data: Buffer.concat(parts), messages }));
  });
}

// ---- the main stack ----

let stack: Stack;
let c: Clients;
const batchUpdate = (instance: string, blobs: Uint8Array[], md?: grpc.Metadata) =>
  unary(c.cas, "BatchUpdateBlobs", { instance_name: instance, requests: blobs.map((data) => ({ digest: digestOf(data), data })) }, md);
const findMissing = async (instance: string, digests: Digest[], md?: grpc.Metadata): Promise<string[]> =>
  ((await unary(c.cas, "FindMissingBlobs", { instance_name: instance, blob_digests: digests }, md)).missing_blob_digests as Digest[]).map(
    (d) => d.hash,
  );

beforeAll(async () => {
  // Resumable uploads from 8 MiB (the default is 1 GiB), so the resume tests stay small.
  stack = await startStack({ vars: { RESUMABLE_UPLOAD_ABOVE_BYTES: String(PART) } });
  c = connect(stack.grpcTarget);
}, 120_000);

afterAll(async () => {
  c?.close();
  await stack?.stop();
});

describe("Capabilities", () => {
  it("advertises SHA-256, API 2.0 within [low, high], updates and a batch limit", async () => {
    const caps = await unary(c.caps, "GetCapabilities", { instance_name: "" });
    const cache = caps.cache_capabilities;
    expect(cache.digest_functions).toContain("SHA256");
    expect(cache.action_cache_update_capabilities.update_enabled).toBe(true);
    expect(Number(cache.max_batch_total_size_bytes)).toBeGreaterThan(0);
    const v = (s: { major: number; minor: number; patch: number }) => s.major * 1e6 + s.minor * 1e3 + s.patch;
    expect(v(caps.low_api_version)).toBeLessThanOrEqual(v({ major: 2, minor: 0, patch: 0 }));
    expect(v(caps.high_api_version)).toBeGreaterThanOrEqual(v({ major: 2, minor: 0, patch: 0 }));
  });
});

describe("ContentAddressableStorage", () => {
  it("FindMissingBlobs reports what is missing and never the empty blob", async () => {
    const present = randomBytes(1000);
    const absent = randomBytes(1000);
    const up = await batchUpdate("", [present]);
    expect(up.responses[0].status.code).toBe(0);
    const missing = await findMissing("", [digestOf(present), digestOf(absent), { hash: EMPTY_SHA256, size_bytes: "0" }]);
    expect(missing).toEqual([sha256(absent)]);
  });

  it("FindMissingBlobs rejects a malformed digest with INVALID_ARGUMENT", async () => {
    const ok = digestOf(randomBytes(10));
    for (const bad of [
      { hash: "xyz", size_bytes: "3" },
      { hash: sha256("a").toUpperCase(), size_bytes: "1" },
      { hash: sha256("a").slice(1), size_bytes: "1" },
      { hash: sha256("a"), size_bytes: "-1" },
    ]) {
      expect(await codeOf(unary(c.cas, "FindMissingBlobs", { blob_digests: [ok, bad] })), JSON.stringify(bad)).toBe("INVALID_ARGUMENT");
    }
  });

  it("FindMissingBlobs takes 10,000 digests in one call", async () => {
    const present = randomBytes(64);
    await batchUpdate("", [present]);
    const digests = Array.from({ length: 9_999 }, () => digestOf(randomBytes(32)));
    digests.splice(5_000, 0, digestOf(present));
    const t0 = performance.now();
    const missing = await findMissing("", digests);
    console.log(`FindMissingBlobs, 10,000 digests: ${(performance.now() - t0).toFixed(0)} ms`);
    expect(missing.length).toBe(9_999);
    expect(new Set(missing)).toEqual(new Set(digests.filter((_, i) => i !== 5_000).map((d) => d.hash)));
  });

  it("BatchUpdateBlobs checks each blob on its own: a wrong hash or size fails only that blob, which is not stored", async () => {
    const good = randomBytes(2048);
    const badHash = randomBytes(100);
    const badSize = randomBytes(100);
    const wrongHashDigest = { hash: sha256(randomBytes(100)), size_bytes: "100" };
    const wrongSizeDigest = { hash: sha256(badSize), size_bytes: "101" };
    const res = await unary(c.cas, "BatchUpdateBlobs", {
      requests: [
        { digest: digestOf(good), data: good },
        { digest: wrongHashDigest, data: badHash },
        { digest: wrongSizeDigest, data: badSize },
      ],
    });
    expect(res.responses.map((r: any) => [r.digest.hash, r.status.code])).toEqual([
      [sha256(good), grpc.status.OK],
      [wrongHashDigest.hash, grpc.status.INVALID_ARGUMENT],
      [wrongSizeDigest.hash, grpc.status.INVALID_ARGUMENT],
    ]);
    const missing = await findMissing("", [digestOf(good), wrongHashDigest, digestOf(badHash), wrongSizeDigest, digestOf(badSize)]);
    expect(new Set(missing)).toEqual(new Set([wrongHashDigest.hash, sha256(badHash), sha256(badSize)]));
  });

  it("BatchUpdateBlobs over max_batch_total_size_bytes fails as a whole with INVALID_ARGUMENT", async () => {
    const caps = await unary(c.caps, "GetCapabilities", {});
    const max = Number(caps.cache_capabilities.max_batch_total_size_bytes);
    const a = randomBytes(Math.ceil(max / 2));
    const b = randomBytes(Math.floor(max / 2) + 1);
    expect(a.byteLength + b.byteLength).toBe(max + 1);
    expect(await codeOf(batchUpdate("", [a, b]))).toBe("INVALID_ARGUMENT");
    expect(new Set(await findMissing("", [digestOf(a), digestOf(b)]))).toEqual(new Set([sha256(a), sha256(b)]));
    // Exactly the limit is accepted.
    const full = randomBytes(max - 10);
    const ok = await batchUpdate("", [full, randomBytes(10)]);
    expect(ok.responses.map((r: any) => r.status.code)).toEqual([0, 0]);
  });

  it("BatchReadBlobs returns found blobs and a per-blob NOT_FOUND", async () => {
    const blob = randomBytes(5000);
    await batchUpdate("", [blob]);
    const absent = digestOf(randomBytes(10));
    const res = await unary(c.cas, "BatchReadBlobs", {
      digests: [digestOf(blob), absent, { hash: EMPTY_SHA256, size_bytes: "0" }],
    });
    expect(res.responses).toHaveLength(3);
    const [found, missing, empty] = res.responses;
    expect(found.status.code).toBe(grpc.status.OK);
    expect(found.digest.hash).toBe(sha256(blob));
    expect(Buffer.compare(found.data, blob)).toBe(0);
    expect(missing.digest.hash).toBe(absent.hash);
    expect(missing.status.code).toBe(grpc.status.NOT_FOUND);
    expect(empty.status.code).toBe(grpc.status.OK);
    expect(empty.data.byteLength).toBe(0);
  });
});

describe("ContentAddressableStorage.GetTree", () => {
  const DIR = "build.bazel.remote.execution.v2.Directory";
  // root -> {a, b}; a -> {c}; b -> {d, e}: three levels, six directories. Each directory holds a
  // file named after it so the directories that come back can be told apart.
  const names = ["root", "a", "b", "c", "d", "e"];
  const children: Record<string, string[]> = { root: ["a", "b"], a: ["c"], b: ["d", "e"], c: [], d: [], e: [] };
  const encoded = new Map<string, Uint8Array>();
  const tag = randomUUID(); // keeps this run's directories distinct from earlier runs'

  beforeAll(async () => {
    const fileBlob = Buffer.from(`file of ${tag}`);
    await batchUpdate("", [fileBlob]);
    for (const n of [...names].reverse()) {
      encoded.set(
        n,
        encode(DIR, {
          files: [{ name: `marker-${n}-${tag}`, digest: digestOf(fileBlob), is_executable: n === "c" }],
          directories: children[n]!.map((child) => ({ name: child, digest: digestOf(encoded.get(child)!) })),
        }),
      );
    }
    const up = await batchUpdate("", [...encoded.values()]);
    expect(up.responses.every((r: any) => r.status.code === 0)).toBe(true);
  });

  const markerOf = (d: any) => (d.files[0].name as string).split("-")[1]!;

  it("streams the whole tree without a page size", async () => {
    const msgs = await serverStream(c.cas, "GetTree", { root_digest: digestOf(encoded.get("root")!) });
    expect(msgs.at(-1).next_page_token).toBe("");
    const got = msgs.flatMap((m) => m.directories).map(markerOf);
    expect(got.sort()).toEqual([...names].sort());
    const c1 = msgs.flatMap((m) => m.directories).find((d) => markerOf(d) === "c");
    expect(c1.files[0].is_executable).toBe(true);
  });

  it("pages with page_size and page_token", async () => {
    const root = digestOf(encoded.get("root")!);
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const msgs = await serverStream(c.cas, "GetTree", { root_digest: root, page_size: 2, page_token: token });
      const dirs = msgs.flatMap((m) => m.directories);
      expect(dirs.length).toBeLessThanOrEqual(2);
      expect(dirs.length).toBeGreaterThan(0);
      seen.push(...dirs.map(markerOf));
      token = msgs.at(-1).next_page_token;
      pages++;
      expect(pages).toBeLessThanOrEqual(6);
    } while (token);
    expect(pages).toBeGreaterThanOrEqual(3); // page_size is a maximum
    expect(seen.sort()).toEqual([...names].sort()); // each directory exactly once
  });

  it("a page token of another root is INVALID_ARGUMENT", async () => {
    const first = await serverStream(c.cas, "GetTree", { root_digest: digestOf(encoded.get("root")!), page_size: 1 });
    const token = first.at(-1).next_page_token;
    expect(token).not.toBe("");
    expect(await codeOf(serverStream(c.cas, "GetTree", { root_digest: digestOf(encoded.get("b")!), page_size: 1, page_token: token }))).toBe(
      "INVALID_ARGUMENT",
    );
  });

  it("a subtree root returns only that subtree", async () => {
    const msgs = await serverStream(c.cas, "GetTree", { root_digest: digestOf(encoded.get("b")!) });
    expect(msgs.flatMap((m) => m.directories).map(markerOf).sort()).toEqual(["b", "d", "e"]);
  });

  it("a missing root is NOT_FOUND", async () => {
    const missing = digestOf(encode(DIR, { files: [{ name: `never-uploaded-${tag}`, digest: digestOf(Buffer.from("x")) }] }));
    expect(await codeOf(serverStream(c.cas, "GetTree", { root_digest: missing }))).toBe("NOT_FOUND");
  });
});

describe("ByteStream", () => {
  it("Write then Read round-trips a small blob", async () => {
    const blob = randomBytes(1000);
    const d = digestOf(blob);
    const w = write(c.bytestream, uploadResource("", d), [blob]);
    expect((await w.response).committed_size).toBe("1000");
    const r = await read(c.bytestream, blobResource("", d));
    expect(Buffer.compare(r.data, blob)).toBe(0);
    expect(await findMissing("", [d])).toEqual([]);
  });

  const BIG = 3 * MiB + 12345; // one R2 put
  const MULTI = 2 * PART + 5 * MiB + 4096; // a multipart upload of three parts

  for (const [label, size] of [
    ["3 MiB (single put)", BIG],
    ["21 MiB (multipart)", MULTI],
  ] as const) {
    it(`Write then Read round-trips ${label} in 1 MiB messages`, async () => {
      const s = randomBytes(16);
      const d = { hash: hashOfStream(s, size), size_bytes: String(size) };
      const w = write(c.bytestream, uploadResource("", d), keystream(s, 0, size));
      expect((await w.response).committed_size).toBe(String(size));
      const r = await read(c.bytestream, blobResource("", d), 0, 0, undefined, false);
      expect(r.size).toBe(size);
      expect(r.hash).toBe(d.hash);
      // The client keeps grpc-js's 4 MiB receive limit, so the server must split the blob.
      expect(r.messages).toBeGreaterThanOrEqual(Math.ceil(size / (4 * MiB)));
    });
  }

  it("Read honours read_offset and read_limit; past the end is OUT_OF_RANGE", async () => {
    const blob = randomBytes(3 * MiB + 17);
    const d = digestOf(blob);
    await (write(c.bytestream, uploadResource("", d), [blob.subarray(0, 2 * MiB), blob.subarray(2 * MiB)]).response);
    const res = blobResource("", d);
    const slice = await read(c.bytestream, res, 1000, 5000);
    expect(Buffer.compare(slice.data, blob.subarray(1000, 6000))).toBe(0);
    const tail = await read(c.bytestream, res, 2 * MiB + 1);
    expect(Buffer.compare(tail.data, blob.subarray(2 * MiB + 1))).toBe(0);
    const overLimit = await read(c.bytestream, res, blob.byteLength - 10, 1000);
    expect(Buffer.compare(overLimit.data, blob.subarray(blob.byteLength - 10))).toBe(0);
    const atEnd = await read(c.bytestream, res, blob.byteLength);
    expect(atEnd.size).toBe(0);
    expect(await codeOf(read(c.bytestream, res, blob.byteLength + 1))).toBe("OUT_OF_RANGE");
    expect(await codeOf(read(c.bytestream, res, 0, -1))).toBe("INVALID_ARGUMENT");
  });

  it("Read of a missing blob is NOT_FOUND", async () => {
    expect(await codeOf(read(c.bytestream, blobResource("", digestOf(randomBytes(10)))))).toBe("NOT_FOUND");
  });

  it("Read of the empty blob succeeds without an upload", async () => {
    const r = await read(c.bytestream, blobResource("", { hash: EMPTY_SHA256, size_bytes: "0" }));
    expect(r.size).toBe(0);
  });

  for (const [label, size] of [
    ["small", 4096],
    ["multipart", PART + 1024],
  ] as const) {
    it(`Write of ${label} data that does not match the hash is INVALID_ARGUMENT and stores nothing`, async () => {
      const data = randomBytes(size);
      const d = { hash: sha256(randomBytes(8)), size_bytes: String(size) };
      const w = write(c.bytestream, uploadResource("", d), [data.subarray(0, size >> 1), data.subarray(size >> 1)]);
      expect(await codeOf(w.response)).toBe("INVALID_ARGUMENT");
      expect(await codeOf(read(c.bytestream, blobResource("", d)))).toBe("NOT_FOUND");
      expect(await findMissing("", [d])).toEqual([d.hash]);
    });
  }

  it("Write of a blob that exists, all data sent, succeeds with committed_size = size", async () => {
    const blob = randomBytes(2 * MiB);
    const d = digestOf(blob);
    await batchUpdate("", [blob]);
    const w = write(c.bytestream, uploadResource("", d), [blob.subarray(0, MiB), blob.subarray(MiB)]);
    expect((await w.response).committed_size).toBe(String(2 * MiB));
  });

  // BUG (worker + bridge, since 0bcb781 "drain rather than cancel a body of an existing blob"):
  // fails today. The bridge sends a Write at write_offset 0 as an HTTP PUT; for a blob that exists
  // the worker now reads the whole body before it answers, so the early completion REAPI
  // describes ("terminate immediately ... committed_size = size") never happens: a client that
  // waits gets no answer, and a client that keeps sending uploads the whole blob for nothing.
  // With the body cancelled (before 0bcb781) this test passed.
  it("Write of a blob that exists completes early with committed_size = size", async () => {
    const blob = randomBytes(2 * MiB);
    const d = digestOf(blob);
    await batchUpdate("", [blob]);
    // Send only the first half, without finish_write: the server must answer without the rest.
    const w = write(c.bytestream, uploadResource("", d), [blob.subarray(0, MiB)], { finish: false });
    try {
      const res = await withTimeout(w.response, 15_000, "no early completion within 15 s");
      expect(res.committed_size).toBe(String(2 * MiB));
    } finally {
      w.call.cancel();
    }
  });

  it("QueryWriteStatus: complete for a stored blob, NOT_FOUND for an unknown upload", async () => {
    const blob = randomBytes(300);
    const d = digestOf(blob);
    const resource = uploadResource("", d);
    await write(c.bytestream, resource, [blob]).response;
    const st = await unary(c.bytestream, "QueryWriteStatus", { resource_name: resource });
    expect(st).toMatchObject({ committed_size: "300", complete: true });
    const unknown = digestOf(randomBytes(PART + 1));
    expect(await codeOf(unary(c.bytestream, "QueryWriteStatus", { resource_name: uploadResource("", unknown) }))).toBe("NOT_FOUND");
  });

  /** Starts a Write of `size` bytes, drops it after `dropAt` bytes, once a part has landed. */
  async function droppedUpload(size: number, dropAt: number) {
    const s = randomBytes(16);
    const d = { hash: hashOfStream(s, size), size_bytes: String(size) };
    const resource = uploadResource("", d);
    const query = () => unary(c.bytestream, "QueryWriteStatus", { resource_name: resource });
    const first = write(c.bytestream, resource, keystream(s, 0, size), {
      cancelAfter: dropAt,
      // Let at least one part land before the stream drops, as on a real connection that was
      // carrying data for a while.
      beforeCancel: async () => {
        for (let i = 0; i < 150; i++) {
          const st = await query().catch(() => null);
          if (st && Number(st.committed_size) >= PART) return;
          await new Promise((r) => setTimeout(r, 200));
        }
        throw new Error(`no part committed 30 s after sending ${dropAt} bytes`);
      },
    });
    expect(await first.sent).toBe(dropAt);
    expect(await codeOf(first.response)).toBe("CANCELLED");

    // The worker goes on committing parts from bytes already on their way until it notices the
    // drop: wait until committed_size has held still for 2 s.
    let committed = -1;
    for (let i = 0, same = 0; i < 60 && same < 4; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const now = Number((await query()).committed_size);
      same = now === committed ? same + 1 : 0;
      committed = now;
    }
    return { s, d, resource, query, committed };
  }

  it("a dropped ~40 MiB Write resumes at committed_size (a multiple of 8 MiB) and completes", async () => {
    const size = 40 * MiB + 777;
    const { s, d, resource, query, committed } = await droppedUpload(size, 20 * MiB);
    console.log(`resumable write: committed_size after the drop = ${committed} (${committed / PART} parts)`);
    expect(committed).toBeGreaterThan(0);
    expect(committed % PART).toBe(0);
    expect(committed).toBeLessThanOrEqual(20 * MiB);
    expect((await query()).complete).toBe(false);

    // Resuming anywhere but committed_size is refused and leaves the upload as it was (offset 0:
    // see the tests below).
    for (const offset of [committed + PART, committed + MiB, ...(committed > PART ? [committed - PART] : [])]) {
      const wrong = write(c.bytestream, resource, keystream(s, offset, 2 * MiB), { offset, finish: false });
      expect(await codeOf(wrong.response), `resume at ${offset}`).toBe("INVALID_ARGUMENT");
    }
    expect(await query()).toMatchObject({ committed_size: String(committed), complete: false });

    const rest = write(c.bytestream, resource, keystream(s, committed, size - committed), { offset: committed });
    expect((await rest.response).committed_size).toBe(String(size));
    expect(await query()).toMatchObject({ committed_size: String(size), complete: true });
    const r = await read(c.bytestream, blobResource("", d), 0, 0, undefined, false);
    expect(r.size).toBe(size);
    expect(r.hash).toBe(d.hash);
  }, 120_000);

  it("restarting a partly committed upload at write_offset 0 is INVALID_ARGUMENT and keeps the upload", async () => {
    const size = 2 * PART + 5;
    const { s, resource, query, committed } = await droppedUpload(size, PART + MiB);
    expect(committed).toBe(PART);
    const again = write(c.bytestream, resource, keystream(s, 0, size));
    expect(await codeOf(again.response)).toBe("INVALID_ARGUMENT");
    expect(await query()).toMatchObject({ committed_size: String(committed), complete: false });
  }, 60_000);

  // BUG (worker, blob PUT surface): fails today. The bridge sends a Write at write_offset 0 as an
  // HTTP PUT; when the worker refuses it before reading the body (here: the upload already has
  // committed parts, so offset 0 is wrong; likewise a read-only key or a bad instance name), it
  // returns the error without cancelling the request body, and the response is held back until the
  // whole body has arrived. A client that waits for the answer, or is slow, sees nothing: the
  // refusal should come at once, as it does for offsets > 0 (gRPC-web path) and for a blob that
  // already exists (the PUT handler cancels the body there).
  it("a refused Write at write_offset 0 is answered without waiting for the rest of the data", async () => {
    const size = 2 * PART + 5;
    const { s, resource, committed } = await droppedUpload(size, PART + MiB);
    expect(committed).toBe(PART);
    const again = write(c.bytestream, resource, keystream(s, 0, 2 * MiB), { finish: false });
    try {
      expect(await codeOf(withTimeout(again.response, 15_000, "no answer 15 s after the first 2 MiB"))).toBe("INVALID_ARGUMENT");
    } finally {
      again.call.cancel();
    }
  }, 60_000);

  it("a Write starting past 0 with nothing committed is INVALID_ARGUMENT", async () => {
    const size = PART + 100;
    const s = randomBytes(16);
    const d = { hash: hashOfStream(s, size), size_bytes: String(size) };
    const w = write(c.bytestream, uploadResource("", d), keystream(s, 4 * MiB, size - 4 * MiB), { offset: 4 * MiB });
    expect(await codeOf(w.response)).toBe("INVALID_ARGUMENT");
  });
});

describe("ActionCache", () => {
  const actionDigest = () => digestOf(randomBytes(64));

  async function uploadedResult(extra: Record<string, unknown> = {}) {
    const stdout = Buffer.from(`hello from ${randomUUID()}\n`);
    const out = randomBytes(3000);
    await batchUpdate("", [stdout, out]);
    return {
      stdout,
      out,
      result: {
        output_files: [{ path: "out/a.txt", digest: digestOf(out), is_executable: false }],
        exit_code: 0,
        stdout_digest: digestOf(stdout),
        execution_metadata: { worker: "e2e-grpc" },
        ...extra,
      },
    };
  }

  it("GetActionResult is NOT_FOUND on a miss", async () => {
    expect(await codeOf(unary(c.ac, "GetActionResult", { action_digest: actionDigest() }))).toBe("NOT_FOUND");
  });

  it("UpdateActionResult then GetActionResult returns the entry; inline_stdout fills stdout_raw", async () => {
    const a = actionDigest();
    const { stdout, out, result } = await uploadedResult();
    const stored = await unary(c.ac, "UpdateActionResult", { action_digest: a, action_result: result });
    expect(stored.stdout_digest.hash).toBe(sha256(stdout));

    const hit = await unary(c.ac, "GetActionResult", { action_digest: a });
    expect(hit.output_files).toHaveLength(1);
    expect(hit.output_files[0]).toMatchObject({ path: "out/a.txt", digest: digestOf(out) });
    expect(hit.stdout_digest).toEqual(digestOf(stdout));
    expect(hit.execution_metadata.worker).toBe("e2e-grpc");
    expect(hit.stdout_raw.byteLength).toBe(0); // not inlined unless asked

    const inlined = await unary(c.ac, "GetActionResult", { action_digest: a, inline_stdout: true, inline_output_files: ["out/a.txt"] });
    expect(inlined.stdout_raw.toString()).toBe(stdout.toString());
    expect(Buffer.compare(inlined.output_files[0].contents, out)).toBe(0);
  });

  it("UpdateActionResult with a missing stdout blob or output file is FAILED_PRECONDITION", async () => {
    const { result } = await uploadedResult();
    const absent = digestOf(randomBytes(99));
    const noStdout = { ...result, stdout_digest: absent };
    const noOutput = { ...result, output_files: [...result.output_files, { path: "out/b.bin", digest: absent }] };
    for (const [label, r] of [
      ["stdout", noStdout],
      ["output file", noOutput],
    ] as const) {
      const a = actionDigest();
      const err = await errorOf(unary(c.ac, "UpdateActionResult", { action_digest: a, action_result: r }));
      expect(grpc.status[err.code], label).toBe("FAILED_PRECONDITION");
      expect(await codeOf(unary(c.ac, "GetActionResult", { action_digest: a })), label).toBe("NOT_FOUND");
    }
  });

  it("entries are per instance name", async () => {
    const a = actionDigest();
    const { result } = await uploadedResult();
    await unary(c.ac, "UpdateActionResult", { instance_name: "a", action_digest: a, action_result: result });
    expect(await codeOf(unary(c.ac, "GetActionResult", { instance_name: "a", action_digest: a }))).toBe("OK");
    expect(await codeOf(unary(c.ac, "GetActionResult", { instance_name: "b", action_digest: a }))).toBe("NOT_FOUND");
    expect(await codeOf(unary(c.ac, "GetActionResult", { instance_name: "", action_digest: a }))).toBe("NOT_FOUND");
  });

  it("an instance name with a reserved segment is INVALID_ARGUMENT", async () => {
    const { result } = await uploadedResult();
    for (const instance of ["x/blobs", "blobs", "x/uploads/y", "x/actionResults"]) {
      expect(await codeOf(unary(c.ac, "GetActionResult", { instance_name: instance, action_digest: actionDigest() })), instance).toBe(
        "INVALID_ARGUMENT",
      );
      expect(
        await codeOf(unary(c.ac, "UpdateActionResult", { instance_name: instance, action_digest: actionDigest(), action_result: result })),
        instance,
      ).toBe("INVALID_ARGUMENT");
    }
  });
});

describe("ByteStream, 1 GiB through the bridge", () => {
  // A stack of its own with the default upload threshold (1 GiB): the blob goes by the path real
  // uploads of this size take, one verified R2 put that reads the bridge's PUT body directly.
  let stack: Stack;
  let c: Clients;
  beforeAll(async () => {
    stack = await startStack();
    c = connect(stack.grpcTarget);
  }, 120_000);
  afterAll(async () => {
    c?.close();
    await stack?.stop();
  });

  // Bounds set from measurements on the 2-core dev machine (the test prints them each run), with
  // margin: a path that held the blob would need over 1 GiB.
  const UPLOAD_PEAK_BOUND = 800e6; // workerd, both processes: measured 540-600 MB
  const LOCAL_PEAK_BOUND = 700e6; // this process: the grpc-js client and the bridge (~200-600 MB)
  const mb = (b: number) => `${(b / 1e6).toFixed(0)} MB`;

  it("round-trips 1 GiB generated on the fly, with bounded memory", async () => {
    const size = 1024 * MiB;
    const s = randomBytes(16);
    const expected = hashOfStream(s, size); // the resource name needs the digest up front
    const d = { hash: expected, size_bytes: String(size) };
    const pids = stack.workerPids();
    expect(pids.length).toBeGreaterThan(0);
    const idle = sampleRss(pids);
    const worker = peakRss(stack.workerPids);
    const local = peakRss(() => [process.pid]);
    const measure = async <T>(fn: () => Promise<T>) => {
      worker.start();
      local.start();
      const t0 = performance.now();
      const value = await fn();
      return { value, ms: performance.now() - t0, workerPeak: worker.stop(), localPeak: local.stop() };
    };
    const mbps = (ms: number) => `${(size / 1e6 / (ms / 1000)).toFixed(1)} MB/s`;

    const sentHash = createHash("sha256");
    const hashing = function* () {
      for (const chunk of keystream(s, 0, size)) {
        sentHash.update(chunk);
        yield chunk;
      }
    };
    const up = await measure(async () => (await write(c.bytestream, uploadResource("", d), hashing()).response).committed_size);
    expect(up.value).toBe(String(size));
    expect(sentHash.digest("hex")).toBe(expected);

    // The same blob over the worker's plain HTTP blob route first: R2's body handed straight to
    // the response, the least any read can cost on this platform.
    const bare = await measure(async () => {
      const res = await fetch(`${stack.httpUrl}/${blobResource("", d)}`);
      const h = createHash("sha256");
      let n = 0;
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        h.update(chunk);
        n += chunk.byteLength;
      }
      return { n, hash: h.digest("hex") };
    });
    expect(bare.value).toEqual({ n: size, hash: expected });

    const down = await measure(() => read(c.bytestream, blobResource("", d), 0, 0, undefined, false));
    expect(down.value.size).toBe(size);
    expect(down.value.hash).toBe(expected);

    console.log(
      `1 GiB via the bridge: upload ${(up.ms / 1000).toFixed(1)} s (${mbps(up.ms)}), download ${(down.ms / 1000).toFixed(1)} s ` +
        `(${mbps(down.ms)}); plain HTTP GET ${(bare.ms / 1000).toFixed(1)} s (${mbps(bare.ms)}). workerd RSS ` +
        `(${pids.length} processes): idle ${mb(idle)}, peak during upload ${mb(up.workerPeak)}, during the HTTP GET ` +
        `${mb(bare.workerPeak)}, during Read ${mb(down.workerPeak)}. Test process (client + bridge) peak: upload ` +
        `${mb(up.localPeak)}, Read ${mb(down.localPeak)}`,
    );
    expect.soft(up.workerPeak, "workerd peak during the upload").toBeLessThan(UPLOAD_PEAK_BOUND);
    // Reads are bounded relative to the bare R2 read, not absolutely: local R2 (miniflare) reads a
    // multipart object ahead of its consumer (a paused 512 MiB GET grows workerd by ~700 MB, the
    // same blob stored by one put does not grow it), which no worker code sees. What Kiln adds on
    // top must not hold the blob.
    expect.soft(down.workerPeak, "workerd peak during Read").toBeLessThan(bare.workerPeak + 150e6);
    // The bridge streams Write as a node:http PUT (Node's fetch would keep every chunk of a
    // streamed request body until the request completes, nodejs/undici#4058).
    expect.soft(up.localPeak, "client + bridge peak during the upload").toBeLessThan(LOCAL_PEAK_BOUND);
    expect.soft(down.localPeak, "client + bridge peak during Read").toBeLessThan(LOCAL_PEAK_BOUND);
  }, 300_000);
});

describe("API keys", () => {
  const RW = "rw-key-123456-0123456789abcdef01";
  const RO = "ro-key-123456-0123456789abcdef01";
  let keyed: Stack;
  let k: Clients;
  const as = (key?: string) => auth(key);
  const fm = (key: string | undefined, instance: string, digests: Digest[]) =>
    unary(k.cas, "FindMissingBlobs", { instance_name: instance, blob_digests: digests }, as(key));
  const bu = (key: string | undefined, instance: string, blobs: Uint8Array[]) =>
    unary(k.cas, "BatchUpdateBlobs", { instance_name: instance, requests: blobs.map((data) => ({ digest: digestOf(data), data })) }, as(key));

  beforeAll(async () => {
    keyed = await startStack({
      vars: {
        API_KEYS: JSON.stringify([
          { key: RW, instances: [""], access: "read-write" },
          { key: RO, instances: ["team"], access: "read" },
        ]),
      },
    });
    k = connect(keyed.grpcTarget);
  }, 120_000);

  afterAll(async () => {
    k?.close();
    await keyed?.stop();
  });

  it("no key, or an unknown key, is UNAUTHENTICATED on every service", async () => {
    const d = digestOf(randomBytes(10));
    for (const key of [undefined, "not-a-key-000000"]) {
      expect(await codeOf(fm(key, "", [d])), `FindMissingBlobs ${key}`).toBe("UNAUTHENTICATED");
      expect(await codeOf(unary(k.caps, "GetCapabilities", {}, as(key))), `GetCapabilities ${key}`).toBe("UNAUTHENTICATED");
      expect(await codeOf(unary(k.ac, "GetActionResult", { action_digest: d }, as(key))), `GetActionResult ${key}`).toBe("UNAUTHENTICATED");
      expect(await codeOf(read(k.bytestream, blobResource("", d), 0, 0, as(key))), `Read ${key}`).toBe("UNAUTHENTICATED");
      const blob = randomBytes(100);
      const w = write(k.bytestream, uploadResource("", digestOf(blob)), [blob], { md: as(key) });
      expect(await codeOf(w.response), `Write ${key}`).toBe("UNAUTHENTICATED");
    }
  });

  it("a read-write key reads and writes", async () => {
    const blob = randomBytes(500);
    const res = await bu(RW, "", [blob]);
    expect(res.responses[0].status.code).toBe(0);
    expect((await fm(RW, "", [digestOf(blob)])).missing_blob_digests).toEqual([]);
    const caps = await unary(k.caps, "GetCapabilities", {}, as(RW));
    expect(caps.cache_capabilities.action_cache_update_capabilities.update_enabled).toBe(true);
    const big = randomBytes(MiB);
    const w = write(k.bytestream, uploadResource("team", digestOf(big)), [big], { md: as(RW) });
    expect((await w.response).committed_size).toBe(String(MiB));
    const r = await read(k.bytestream, blobResource("team", digestOf(big)), 0, 0, as(RW));
    expect(r.hash).toBe(sha256(big));
  });

  it("a read-only key reads its instance and the names below it", async () => {
    const blob = randomBytes(700);
    await bu(RW, "team/x", [blob]);
    for (const instance of ["team", "team/x"]) {
      expect((await fm(RO, instance, [digestOf(blob)])).missing_blob_digests, instance).toEqual([]);
      const br = await unary(k.cas, "BatchReadBlobs", { instance_name: instance, digests: [digestOf(blob)] }, as(RO));
      expect(Buffer.compare(br.responses[0].data, blob), instance).toBe(0);
      const r = await read(k.bytestream, blobResource(instance, digestOf(blob)), 0, 0, as(RO));
      expect(r.hash, instance).toBe(sha256(blob));
      expect(await codeOf(unary(k.ac, "GetActionResult", { instance_name: instance, action_digest: digestOf(blob) }, as(RO))), instance).toBe(
        "NOT_FOUND",
      );
    }
    const caps = await unary(k.caps, "GetCapabilities", { instance_name: "team" }, as(RO));
    expect(caps.cache_capabilities.action_cache_update_capabilities.update_enabled).toBe(false);
  });

  it("a read-only key writing is PERMISSION_DENIED", async () => {
    const blob = randomBytes(800);
    expect(await codeOf(bu(RO, "team", [blob]))).toBe("PERMISSION_DENIED");
    const w = write(k.bytestream, uploadResource("team", digestOf(blob)), [blob], { md: as(RO) });
    expect(await codeOf(w.response), "ByteStream.Write").toBe("PERMISSION_DENIED");
    expect(
      await codeOf(
        unary(k.ac, "UpdateActionResult", { instance_name: "team", action_digest: digestOf(blob), action_result: { exit_code: 0 } }, as(RO)),
      ),
      "UpdateActionResult",
    ).toBe("PERMISSION_DENIED");
    expect((await fm(RW, "team", [digestOf(blob)])).missing_blob_digests.map((d: Digest) => d.hash)).toEqual([sha256(blob)]);
  });

  it("a read-only key on another instance is PERMISSION_DENIED", async () => {
    const d = digestOf(randomBytes(10));
    for (const instance of ["other", "", "teams", "other/team"]) {
      expect(await codeOf(fm(RO, instance, [d])), JSON.stringify(instance)).toBe("PERMISSION_DENIED");
      expect(await codeOf(read(k.bytestream, blobResource(instance, d), 0, 0, as(RO))), JSON.stringify(instance)).toBe("PERMISSION_DENIED");
    }
  });
});
