import { Code, ConnectError } from "@connectrpc/connect";
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import type { Env } from "../../src/env.ts";
import { PART_SIZE, resumableAbove } from "../../src/storage/upload.ts";
import { codeOf, connectClient, digestOf, grpcWebClient, pseudoRandom, sha256Hex } from "./helpers.ts";

const bs = grpcWebClient(ByteStream);
const cas = connectClient(ContentAddressableStorage);

async function* chunksOf(resourceName: string, data: Uint8Array, chunk: number, start = 0, finish = true) {
  for (let off = start; off < data.byteLength || off === start; off += chunk) {
    const end = Math.min(off + chunk, data.byteLength);
    yield { resourceName: off === start ? resourceName : "", writeOffset: BigInt(off), data: data.subarray(off, end), finishWrite: finish && end === data.byteLength };
    if (end === data.byteLength) return;
  }
}

async function readAll(resourceName: string, readOffset = 0n, readLimit = 0n) {
  const parts: Uint8Array[] = [];
  for await (const r of bs.read({ resourceName, readOffset, readLimit })) parts.push(r.data);
  return new Uint8Array(await new Blob(parts).arrayBuffer());
}


describe("ByteStream", () => {
  it("writes and reads back a blob, with offsets and limits", async () => {
    const data = pseudoRandom(300_000, 11);
    const d = await digestOf(data);
    const res = `inst/a/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    const w = await bs.write(chunksOf(res, data, 16 * 1024));
    expect(w.committedSize).toBe(d.sizeBytes);
    const read = `inst/a/blobs/${d.hash}/${d.sizeBytes}`;
    expect(await sha256Hex(await readAll(read))).toBe(d.hash);
    expect(await readAll(read, 1000n, 10n)).toEqual(data.subarray(1000, 1010));
    expect((await readAll(read, BigInt(data.byteLength))).byteLength).toBe(0);
    expect(await codeOf(readAll(read, BigInt(data.byteLength + 1)))).toBe(Code.OutOfRange);
    expect(await codeOf(readAll(read, 0n, -1n))).toBe(Code.InvalidArgument);
  });

  it("never stores data that does not match its digest", async () => {
    const data = pseudoRandom(50_000, 12);
    const d = await digestOf(pseudoRandom(50_000, 13));
    const res = `uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    expect(await codeOf(bs.write(chunksOf(res, data, 8192)))).toBe(Code.InvalidArgument);
    expect(await codeOf(readAll(`blobs/${d.hash}/${d.sizeBytes}`))).toBe(Code.NotFound);
    expect(await env.CAS.head(`cas/default/${d.hash}`)).toBeNull();
  });

  it("refuses a short stream, a wrong offset and a bad resource name", async () => {
    const data = pseudoRandom(40_000, 14);
    const d = await digestOf(data);
    const res = `uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    expect(await codeOf(bs.write(chunksOf(res, data.subarray(0, 20_000), 8192, 0, true)))).toBe(Code.InvalidArgument);
    async function* skip() {
      yield { resourceName: res, writeOffset: 0n, data: data.subarray(0, 100) };
      yield { writeOffset: 200n, data: data.subarray(200), finishWrite: true };
    }
    expect(await codeOf(bs.write(skip()))).toBe(Code.InvalidArgument);
    for (const bad of ["blobs/x/1", `uploads/${crypto.randomUUID()}/blobs/${d.hash}`, `a/blobs/uploads/u/blobs/${d.hash}/${d.sizeBytes}`, `uploads/u/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`]) {
      expect(await codeOf(bs.write(chunksOf(bad, data, 40_000)))).toBe(Code.InvalidArgument);
    }
    expect(await codeOf(readAll(`blobs/${d.hash}/${d.sizeBytes}`))).toBe(Code.NotFound);
  });

  it("completes early when the blob already exists", async () => {
    const data = pseudoRandom(10_000, 15);
    const d = await digestOf(data);
    await cas.batchUpdateBlobs({ requests: [{ digest: d, data }] });
    async function* onlyFirst() {
      yield { resourceName: `uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`, writeOffset: 0n, data: data.subarray(0, 10) };
    }
    expect((await bs.write(onlyFirst())).committedSize).toBe(d.sizeBytes);
  });

  it("resumes a large upload at committed_size after the stream drops", async () => {
    const size = 2 * PART_SIZE + 1234;
    const data = pseudoRandom(size, 16);
    const d = await digestOf(data);
    const res = `ci/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    expect(await codeOf(bs.queryWriteStatus({ resourceName: res }))).toBe(Code.NotFound);
    // Send a part and a half, then end without finish_write: the client went away. That is no
    // error (ByteStream: the service answers the closed stream with what it committed).
    const sent = PART_SIZE + PART_SIZE / 2;
    expect((await bs.write(chunksOf(res, data.subarray(0, sent), 1 << 20, 0, false))).committedSize).toBe(BigInt(PART_SIZE));
    const status = await bs.queryWriteStatus({ resourceName: res });
    expect(status).toMatchObject({ committedSize: BigInt(PART_SIZE), complete: false });
    expect(await codeOf(readAll(`ci/blobs/${d.hash}/${d.sizeBytes}`))).toBe(Code.NotFound);
    // Resuming anywhere but committed_size is refused.
    expect(await codeOf(bs.write(chunksOf(res, data, 1 << 20, 1000)))).toBe(Code.InvalidArgument);
    const w = await bs.write(chunksOf(res, data, 1 << 20, PART_SIZE));
    expect(w.committedSize).toBe(d.sizeBytes);
    expect(await bs.queryWriteStatus({ resourceName: res })).toMatchObject({ committedSize: d.sizeBytes, complete: true });
    expect(await sha256Hex(await readAll(`ci/blobs/${d.hash}/${d.sizeBytes}`))).toBe(d.hash);
  });

  it("answers a small upload closed before finish_write with committed_size 0, storing nothing", async () => {
    const data = pseudoRandom(100_000, 17);
    const d = await digestOf(data);
    const res = `ci/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    expect((await bs.write(chunksOf(res, data.subarray(0, 50_000), 8192, 0, false))).committedSize).toBe(0n);
    expect(await codeOf(readAll(`ci/blobs/${d.hash}/${d.sizeBytes}`))).toBe(Code.NotFound);
    expect((await bs.write(chunksOf(res, data, 8192))).committedSize).toBe(d.sizeBytes);
  });

  it("reads a multipart upload on to its finish_write: bytes past the declared size or after finish_write are refused, nothing stored", async () => {
    const size = PART_SIZE + 10;
    const data = pseudoRandom(size + 1, 19);
    const d = await digestOf(data.subarray(0, size));
    const name = () => `ci/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    const visible = async () => (await cas.findMissingBlobs({ instanceName: "ci", blobDigests: [d] })).missingBlobDigests.length === 0;
    // Every declared byte, then one more with finish_write.
    const res = name();
    async function* oneMore() {
      yield* chunksOf(res, data.subarray(0, size), 1 << 20, 0, false);
      yield { writeOffset: BigInt(size), data: data.subarray(size), finishWrite: true };
    }
    const past = await bs.write(oneMore()).catch((e) => ConnectError.from(e));
    expect([(past as ConnectError).code, (past as ConnectError).rawMessage]).toEqual([Code.InvalidArgument, `more than the ${size} bytes the resource name declares`]);
    // Every byte with finish_write, then a message after it.
    const res2 = name();
    async function* afterFinish() {
      yield* chunksOf(res2, data.subarray(0, size), 1 << 20);
      yield { writeOffset: BigInt(size), data: new Uint8Array() };
    }
    expect(await codeOf(bs.write(afterFinish()))).toBe(Code.InvalidArgument);
    expect(await visible()).toBe(false);
    // Every byte, and finish_write alone in a last empty message: read, and the blob is stored.
    const res3 = name();
    async function* finishAlone() {
      yield* chunksOf(res3, data.subarray(0, size), 1 << 20, 0, false);
      yield { writeOffset: BigInt(size), data: new Uint8Array(), finishWrite: true };
    }
    expect((await bs.write(finishAlone())).committedSize).toBe(d.sizeBytes);
    expect(await visible()).toBe(true);
  });

  it("keeps a multipart upload whose every byte came without finish_write unfinished, until a Write at committed_size finishes it", async () => {
    const size = PART_SIZE + 10;
    const data = pseudoRandom(size, 20);
    const d = await digestOf(data);
    const res = `ci/uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    expect((await bs.write(chunksOf(res, data, 1 << 20, 0, false))).committedSize).toBe(d.sizeBytes);
    expect(await bs.queryWriteStatus({ resourceName: res })).toMatchObject({ committedSize: d.sizeBytes, complete: false });
    expect((await cas.findMissingBlobs({ instanceName: "ci", blobDigests: [d] })).missingBlobDigests).toHaveLength(1);
    async function* finish() {
      yield { resourceName: res, writeOffset: d.sizeBytes, data: new Uint8Array(), finishWrite: true };
    }
    expect((await bs.write(finish())).committedSize).toBe(d.sizeBytes);
    expect(await sha256Hex(await readAll(`ci/blobs/${d.hash}/${d.sizeBytes}`))).toBe(d.hash);
  });

  it("verifies the whole hash of a multipart upload before it becomes visible", async () => {
    const size = PART_SIZE + 10;
    const data = pseudoRandom(size, 17);
    const d = { hash: await sha256Hex(pseudoRandom(size, 18)), sizeBytes: BigInt(size) };
    const res = `uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    const err = await bs.write(chunksOf(res, data, 1 << 20)).catch((e) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/hashes to/);
    expect(await env.CAS.head(`cas/default/${d.hash}`)).toBeNull();
  });
});

describe("abandoned uploads", () => {
  it("are aborted by the index's alarm once stale", async () => {
    const { runDurableObjectAlarm, runInDurableObject } = await import("cloudflare:test");
    const size = PART_SIZE + 100;
    const data = pseudoRandom(size, 41);
    const d = await digestOf(data);
    const res = `uploads/${crypto.randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    await bs.write(chunksOf(res, data.subarray(0, PART_SIZE + 10), 1 << 20, 0, false)).catch(() => {});
    expect((await bs.queryWriteStatus({ resourceName: res })).committedSize).toBe(BigInt(PART_SIZE));
    const stub = env.CAS_INDEX.get(env.CAS_INDEX.idFromName(`default:${d.hash[0]}`));
    // Age the session past the TTL, then let the alarm run.
    await runInDurableObject(stub, (_obj, state) => {
      state.storage.sql.exec(`UPDATE uploads SET updated = 0`);
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await codeOf(bs.queryWriteStatus({ resourceName: res }))).toBe(Code.NotFound);
  });
});

describe("which uploads are resumable", () => {
  it("blobs over 1 GiB by default, over RESUMABLE_UPLOAD_ABOVE_BYTES when set, never under one part", () => {
    const withVar = (v?: string) => resumableAbove({ RESUMABLE_UPLOAD_ABOVE_BYTES: v } as Env);
    expect(withVar(undefined)).toBe(1024 * 1024 * 1024);
    expect(withVar("not a number")).toBe(1024 * 1024 * 1024);
    expect(withVar(String(64 * 1024 * 1024))).toBe(64 * 1024 * 1024);
    expect(withVar("1")).toBe(PART_SIZE);
  });
});
