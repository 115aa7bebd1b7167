// zstd through the bridge with a real @grpc/grpc-js client: Capabilities advertises it, and a
// blob of several MiB goes up as compressed-blobs/zstd (one frame, as zstd-jni clients send it)
// and comes back compressed and uncompressed, verified on the uncompressed bytes. The client
// compresses with the reference C library (@bokuweb/zstd-wasm's Node build) and decodes with fzstd.
import { createHash, randomUUID } from "node:crypto";
import { compress, init } from "@bokuweb/zstd-wasm";
import { Decompress, decompress } from "fzstd";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, digestOf, errorOf, grpc, serverStream, sha256, unary, type Clients } from "./grpc-client.ts";
import { peakRss, startStack, type Stack } from "./stack.ts";

const MiB = 1024 * 1024;

let stack: Stack;
let c: Clients;

beforeAll(async () => {
  await init();
  stack = await startStack();
  c = connect(stack.grpcTarget);
});

afterAll(async () => {
  c?.close();
  await stack?.stop();
});

/** Log-like text: compresses several times, as build outputs often do. */
function logLines(size: number): Buffer {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < size; i++) {
    const line = `INFO: [${i}] Compiling src/module_${i % 977}/file_${(i * 7919) % 10007}.cc (${(i * 104729) % 65536} bytes)\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, size);
}

const slices = function* (zstd: Uint8Array, chunk: number) {
  for (let at = 0; at < zstd.byteLength; at += chunk) yield zstd.subarray(at, at + chunk);
};

/** ByteStream.Write of compressed bytes: offsets are the first plus the compressed bytes sent. */
function write(resourceName: string, zstd: Uint8Array | Iterable<Uint8Array>, chunk = 64 * 1024): Promise<{ committed_size: string }> {
  const parts = zstd instanceof Uint8Array ? slices(zstd, chunk) : zstd;
  return new Promise((resolve, reject) => {
    const call: grpc.ClientWritableStream<unknown> = c.bytestream.Write((err: grpc.ServiceError | null, res: { committed_size: string }) =>
      err ? reject(err) : resolve(res),
    );
    void (async () => {
      let at = 0;
      const it = parts[Symbol.iterator]();
      for (let cur = it.next(); !cur.done; ) {
        const data = cur.value;
        const after = it.next();
        const msg = { resource_name: at === 0 ? resourceName : "", write_offset: String(at), data, finish_write: !!after.done };
        at += data.byteLength;
        cur = after;
        if (!call.write(msg)) await new Promise<void>((r) => call.once("drain", r));
      }
      call.end();
    })();
  });
}

async function read(resourceName: string): Promise<Buffer> {
  const parts = await serverStream<{ data: Buffer }>(c.bytestream, "Read", { resource_name: resourceName, read_offset: "0", read_limit: "0" });
  return Buffer.concat(parts.map((p) => p.data));
}

describe("zstd through the bridge (grpc-js)", () => {
  it("Capabilities advertises zstd", async () => {
    const caps = await unary(c.caps, "GetCapabilities", {});
    expect(caps.cache_capabilities.supported_compressors).toEqual(["ZSTD"]);
    expect(caps.cache_capabilities.supported_batch_update_compressors).toEqual(["ZSTD"]);
  });

  it("writes and reads back a 24 MiB blob as compressed-blobs/zstd", async () => {
    const data = logLines(24 * MiB);
    const d = digestOf(data);
    const zstd = compress(data, 3);
    expect(zstd.byteLength).toBeLessThan(data.byteLength / 3);
    const w = await write(`e2e/uploads/${randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.size_bytes}`, zstd);
    expect(w.committed_size).toBe(String(zstd.byteLength)); // where the offsets reached, as Bazel expects

    const packed = await read(`e2e/compressed-blobs/zstd/${d.hash}/${d.size_bytes}`);
    expect(packed.byteLength).toBeLessThan(data.byteLength / 3);
    expect(sha256(decompress(packed))).toBe(d.hash);
    expect(sha256(await read(`e2e/blobs/${d.hash}/${d.size_bytes}`))).toBe(d.hash);
  });

  it("refuses a corrupt stream with INVALID_ARGUMENT and stores nothing", async () => {
    const data = logLines(3 * MiB + 5);
    const d = digestOf(data);
    const zstd = Buffer.from(compress(data, 3));
    zstd.fill(0x41, 1000, 3000);
    const e = await errorOf(write(`e2e/uploads/${randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.size_bytes}`, zstd));
    expect(grpc.status[e.code]).toBe("INVALID_ARGUMENT");
    const missing = await unary(c.cas, "FindMissingBlobs", { instance_name: "e2e", blob_digests: [d] });
    expect(missing.missing_blob_digests).toHaveLength(1);
  });
});

describe("zstd, 1 GiB through the bridge", () => {
  // Bounds with margin over what this machine measured (printed each run); a path that held the
  // blob, compressed or not, would need over 1 GiB.
  const WORKER_PEAK_BOUND = 800e6;
  const LOCAL_PEAK_BOUND = 700e6; // this process: the client and the bridge (which relays these names as gRPC-web)
  const mb = (b: number) => `${(b / 1e6).toFixed(0)} MB`;

  it("writes and reads 1 GiB compressed, with bounded memory in the worker and the bridge", async () => {
    const size = 1024 * MiB;
    // 1 GiB of text made on the fly: one log-like MiB, stamped with its index so every frame differs.
    const base = logLines(MiB);
    const chunk = (i: number) => {
      const b = Buffer.from(base);
      b.write(`chunk ${i} `.padEnd(16, "."), 0);
      return b;
    };
    const h = createHash("sha256");
    for (let i = 0; i < size / MiB; i++) h.update(chunk(i));
    const d = { hash: h.digest("hex"), size_bytes: String(size) };
    let wire = 0;
    // The client compresses frame by frame too (concatenated frames are one zstd stream).
    const frames = function* () {
      for (let i = 0; i < size / MiB; i++) {
        const f = compress(chunk(i), 1);
        wire += f.byteLength;
        yield f;
      }
    };
    const worker = peakRss(stack.workerPids);
    const local = peakRss(() => [process.pid]);
    worker.start();
    local.start();
    const w = await write(`big/uploads/${randomUUID()}/compressed-blobs/zstd/${d.hash}/${d.size_bytes}`, frames());
    const upPeak = worker.stop();
    const upLocal = local.stop();
    expect(w.committed_size).toBe(String(wire));

    // Read back compressed, decoded and hashed as it arrives.
    const got = createHash("sha256");
    let n = 0;
    let received = 0;
    const decoder = new Decompress((block) => {
      got.update(block);
      n += block.byteLength;
    });
    worker.start();
    local.start();
    await new Promise<void>((resolve, reject) => {
      const call: grpc.ClientReadableStream<{ data: Buffer }> = c.bytestream.Read({ resource_name: `big/compressed-blobs/zstd/${d.hash}/${d.size_bytes}`, read_offset: "0", read_limit: "0" });
      call.on("data", (m: { data: Buffer }) => {
        received += m.data.byteLength;
        decoder.push(m.data);
      });
      call.on("error", reject);
      call.on("end", () => resolve());
    });
    const downPeak = worker.stop();
    const downLocal = local.stop();
    decoder.push(new Uint8Array(0), true);
    expect(n).toBe(size);
    expect(got.digest("hex")).toBe(d.hash);
    console.log(
      `zstd 1 GiB: ${mb(wire)} sent, ${mb(received)} received; workerd peak RSS: write ${mb(upPeak)}, read ${mb(downPeak)}; ` +
        `test process (client + bridge) peak: write ${mb(upLocal)}, read ${mb(downLocal)}`,
    );
    expect(received).toBeLessThan(size / 4);
    expect(upPeak, "workerd peak during the compressed write").toBeLessThan(WORKER_PEAK_BOUND);
    expect(downPeak, "workerd peak during the compressed read").toBeLessThan(WORKER_PEAK_BOUND);
    expect(upLocal, "client + bridge peak during the compressed write").toBeLessThan(LOCAL_PEAK_BOUND);
    expect(downLocal, "client + bridge peak during the compressed read").toBeLessThan(LOCAL_PEAK_BOUND);
  });
});
