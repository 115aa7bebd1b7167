// Blobs over the edge's body cap through the bridge with a real @grpc/grpc-js client: the worker
// runs with a small MAX_REQUEST_BODY_BYTES (so max_cas_blob_size_bytes is 4 MiB and larger direct
// uploads are refused), and the bridge, reading that from Capabilities, moves larger blobs as
// FastCDC chunks with BatchUpdateBlobs + SpliceBlob, and reads them back whole. The
// runner, asked the same, uploads an action's large output the same way.
import { randomBytes, randomUUID } from "node:crypto";
import { compress, init } from "@bokuweb/zstd-wasm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FastCdc, chunkStream, fastCdc2020Params } from "../../src/shared/fastcdc.ts";
import { digestOf, errorOf, grpc, sha256, statusName, unary, type Clients } from "./grpc-client.ts";
import { connectExec, execute, finalOf, putAction, type ExecClients } from "./execution-client.ts";
import { startStack, type Stack } from "./stack.ts";

const MiB = 1024 * 1024;
const CAP = 5 * MiB; // max_cas_blob_size_bytes = CAP - 1 MiB of framing room = 4 MiB

function write(bs: Clients["bytestream"], resource: string, blob: Uint8Array, piece = 64 * 1024): Promise<{ committed_size: string }> {
  return new Promise((resolve, reject) => {
    const call = bs.write(new grpc.Metadata(), (err: grpc.ServiceError | null, res: { committed_size: string }) => (err ? reject(err) : resolve(res)));
    for (let off = 0; off < blob.length; off += piece) {
      const data = blob.subarray(off, off + piece);
      call.write({ resource_name: off === 0 ? resource : "", write_offset: String(off), data, finish_write: off + piece >= blob.length });
    }
    call.end();
  });
}

function read(bs: Clients["bytestream"], resource: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const call = bs.read({ resource_name: resource, read_offset: "0", read_limit: "0" });
    call.on("data", (m: { data: Buffer }) => parts.push(m.data));
    call.on("error", reject);
    call.on("end", () => resolve(Buffer.concat(parts)));
  });
}

describe("chunked blobs through the bridge (split/splice past the body cap)", () => {
  let stack: Stack;
  let c: ExecClients;
  beforeAll(async () => {
    stack = await startStack({ vars: { MAX_REQUEST_BODY_BYTES: String(CAP) }, runner: true });
    c = connectExec(stack.grpcTarget);
  }, 120_000);
  afterAll(async () => {
    c?.close();
    await stack?.stop();
  });

  it("advertises the lowered limit and chunking", async () => {
    const caps = await unary(c.caps, "GetCapabilities", { instance_name: "" });
    expect(caps.cache_capabilities.max_cas_blob_size_bytes).toBe(String(4 * MiB));
    expect(caps.cache_capabilities.splice_blob_support).toBe(true);
    expect(caps.cache_capabilities.fast_cdc_2020_params.avg_chunk_size_bytes).toBe(String(512 * 1024));
  });

  it("a blob over the limit is refused when PUT directly, but a Write through the bridge stores it intact", async () => {
    const blob = randomBytes(11 * MiB + 7);
    const d = digestOf(blob);
    const direct = await fetch(`${stack.httpUrl}/e2e/uploads/${randomUUID()}/blobs/${d.hash}/${d.size_bytes}`, { method: "PUT", body: blob });
    expect(direct.status).toBe(400);
    expect(await direct.text()).toMatch(/max_cas_blob_size_bytes/);

    const res = await write(c.bytestream, `e2e/uploads/${randomUUID()}/blobs/${d.hash}/${d.size_bytes}`, blob);
    expect(res.committed_size).toBe(d.size_bytes);
    // The worker holds the whole blob (read straight from it) and the FastCDC chunks it came in.
    const stored = Buffer.from(await (await fetch(`${stack.httpUrl}/e2e/blobs/${d.hash}/${d.size_bytes}`)).arrayBuffer());
    expect(sha256(stored)).toBe(d.hash);
    const chunks = [];
    for await (const chunk of chunkStream([blob], new FastCdc(fastCdc2020Params(512 * 1024)))) chunks.push(digestOf(chunk));
    expect(chunks.length).toBeGreaterThan(5);
    const missing = await unary(c.cas, "FindMissingBlobs", { instance_name: "e2e", blob_digests: chunks });
    expect(missing.missing_blob_digests).toEqual([]);

    // Read back through the bridge (a plain GET: the edge caps request bodies, not responses).
    const back = await read(c.bytestream, `e2e/blobs/${d.hash}/${d.size_bytes}`);
    expect(back.length).toBe(blob.length);
    expect(sha256(back)).toBe(d.hash);
  }, 180_000);

  it("a compressed Write of a blob over the limit is decompressed by the bridge and goes up as chunks", async () => {
    await init();
    // Already-compressed output (random bytes): its zstd is as large as the blob, over the cap.
    const blob = Buffer.concat([randomBytes(9 * MiB), Buffer.alloc(2 * MiB, "x")]);
    const d = digestOf(blob);
    const zstd = Buffer.from(compress(blob, 3));
    expect(zstd.length).toBeGreaterThan(CAP);
    const res = await write(c.bytestream, `e2e/uploads/${randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.size_bytes}`, zstd);
    expect(res.committed_size).toBe(String(zstd.length));
    expect(sha256(await read(c.bytestream, `e2e/blobs/${d.hash}/${d.size_bytes}`))).toBe(d.hash);
    const chunks = [];
    for await (const chunk of chunkStream([blob], new FastCdc(fastCdc2020Params(512 * 1024)))) chunks.push(digestOf(chunk));
    expect((await unary(c.cas, "FindMissingBlobs", { instance_name: "e2e", blob_digests: chunks })).missing_blob_digests).toEqual([]);
    // Stored already: at once, committed_size -1.
    const again = await write(c.bytestream, `e2e/uploads/${randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.size_bytes}`, zstd);
    expect(again.committed_size).toBe("-1");
    // zstd of other bytes: INVALID_ARGUMENT, nothing stored under the claimed digest.
    const claimed = digestOf(randomBytes(6 * MiB));
    const err = await errorOf(write(c.bytestream, `e2e/uploads/${randomUUID()}/compressed-blobs/zstd/${claimed.hash}/${claimed.size_bytes}`, Buffer.from(compress(randomBytes(6 * MiB), 1))));
    expect(statusName(err.code)).toBe("INVALID_ARGUMENT");
    expect((await unary(c.cas, "FindMissingBlobs", { instance_name: "e2e", blob_digests: [claimed] })).missing_blob_digests).toHaveLength(1);
  }, 180_000);

  it("a Write whose bytes do not match its digest is INVALID_ARGUMENT and nothing is stored", async () => {
    const blob = randomBytes(6 * MiB);
    const claimed = digestOf(randomBytes(6 * MiB));
    const err = await errorOf(write(c.bytestream, `e2e/uploads/${randomUUID()}/blobs/${claimed.hash}/${claimed.size_bytes}`, blob));
    expect(statusName(err.code)).toBe("INVALID_ARGUMENT");
    const missing = await unary(c.cas, "FindMissingBlobs", { instance_name: "e2e", blob_digests: [claimed] });
    expect(missing.missing_blob_digests).toHaveLength(1);
  }, 120_000);

  it("blobs under the limit still go up in one request", async () => {
    const blob = randomBytes(3 * MiB);
    const d = digestOf(blob);
    expect((await write(c.bytestream, `e2e/uploads/${randomUUID()}/blobs/${d.hash}/${d.size_bytes}`, blob)).committed_size).toBe(d.size_bytes);
    expect(sha256(await read(c.bytestream, `e2e/blobs/${d.hash}/${d.size_bytes}`))).toBe(d.hash);
  }, 60_000);

  it("the runner uploads an action output over the limit as chunks + SpliceBlob", async () => {
    const size = 9 * MiB + 3;
    const { digest } = await putAction(c, "e2e", { script: `head -c ${size} /dev/urandom` });
    const { response } = await finalOf(execute(c, "e2e", digest));
    expect(response.status?.code ?? 0, response.status?.message).toBe(0);
    const out = response.result!.stdoutDigest!;
    expect(Number(out.sizeBytes)).toBe(size);
    const stored = Buffer.from(await (await fetch(`${stack.httpUrl}/e2e/blobs/${out.hash}/${out.sizeBytes}`)).arrayBuffer());
    expect(stored.length).toBe(size);
    expect(sha256(stored)).toBe(out.hash);
    // It went up in FastCDC chunks: each is in the CAS on its own.
    const chunks = [];
    for await (const chunk of chunkStream([stored], new FastCdc(fastCdc2020Params(512 * 1024)))) chunks.push(digestOf(chunk));
    const missing = await unary(c.cas, "FindMissingBlobs", { instance_name: "e2e", blob_digests: chunks });
    expect(missing.missing_blob_digests).toEqual([]);
  }, 180_000);
});
