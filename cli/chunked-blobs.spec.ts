// writeChunked against a stand-in worker that advertises its own batch limit and records what the
// bridge sends it: every BatchUpdateBlobs must fit that limit, whatever the chunk sizes.
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decompress } from "fzstd";
import { Capabilities, Compressor_Value, ContentAddressableStorage } from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { chunkPolicy, writeChunked } from "./chunked-blobs.ts";

const MiB = 1024 * 1024;
/** The stand-in's max_batch_total_size_bytes: under the bridge's own 3 MiB, as an operator may set it. */
const BATCH_LIMIT = 1_500_000;

const batches: number[] = [];
/** Per batch, the uncompressed bytes of its zstd entries. */
const inflated: number[] = [];
const stored = new Map<string, number>();
let spliced: string[] = [];
const worker = createServer(
  connectNodeAdapter({
    routes(router) {
      router.service(Capabilities, {
        getCapabilities: () => ({
          cacheCapabilities: {
            maxBatchTotalSizeBytes: BigInt(BATCH_LIMIT),
            maxCasBlobSizeBytes: BigInt(4 * MiB),
            splitBlobSupport: true,
            spliceBlobSupport: true,
            fastCdc2020Params: { avgChunkSizeBytes: 128n * 1024n, seed: 0 },
            supportedBatchUpdateCompressors: [Compressor_Value.ZSTD],
          },
        }),
      });
      router.service(ContentAddressableStorage, {
        findMissingBlobs: (req) => ({ missingBlobDigests: req.blobDigests.filter((d) => !stored.has(d.hash)) }),
        batchUpdateBlobs(req) {
          const bytes = req.requests.reduce((n, r) => n + r.data.byteLength, 0);
          batches.push(bytes);
          if (bytes > BATCH_LIMIT) throw new ConnectError(`the batch totals ${bytes} bytes, over ${BATCH_LIMIT}`, Code.InvalidArgument);
          let unpacked = 0;
          for (const r of req.requests) {
            // As the worker does: a zstd entry is checked against its digest once decompressed.
            const data = r.compressor === Compressor_Value.ZSTD ? decompress(r.data) : r.data;
            if (r.compressor === Compressor_Value.ZSTD) unpacked += data.byteLength;
            if (createHash("sha256").update(data).digest("hex") !== r.digest!.hash) throw new ConnectError(`chunk ${r.digest!.hash} does not hash to its digest`, Code.InvalidArgument);
            stored.set(r.digest!.hash, data.byteLength);
          }
          inflated.push(unpacked);
          return { responses: req.requests.map((r) => ({ digest: r.digest, status: { code: 0 } })) };
        },
        spliceBlob(req) {
          spliced = req.chunkDigests.map((d) => d.hash);
          return { blobDigest: req.blobDigest };
        },
      });
    },
  }),
);

let transport: ReturnType<typeof createGrpcWebTransport>;
beforeAll(async () => {
  await new Promise<void>((resolve) => worker.listen(0, "127.0.0.1", resolve));
  transport = createGrpcWebTransport({ baseUrl: `http://127.0.0.1:${(worker.address() as AddressInfo).port}`, httpVersion: "1.1" });
});
afterAll(() => void worker.close());

/** Deterministic bytes that do not repeat (so every chunk is new). */
function pseudoRandom(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function context(): HandlerContext {
  return { signal: new AbortController().signal, timeoutMs: () => undefined, requestHeader: new Headers(), values: createContextValues() } as unknown as HandlerContext;
}

describe("writeChunked", () => {
  it("keeps every BatchUpdateBlobs within the worker's advertised max_batch_total_size_bytes", async () => {
    const ctx = context();
    const plan = await chunkPolicy(transport)(ctx, "main");
    expect(plan).toMatchObject({ above: 4 * MiB });
    const blob = pseudoRandom(24 * MiB, 7);
    const digest = { hash: createHash("sha256").update(blob).digest("hex"), size: blob.byteLength };
    async function* pieces() {
      for (let at = 0; at < blob.byteLength; at += 256 * 1024) yield blob.subarray(at, at + 256 * 1024);
    }
    await writeChunked(transport, plan!, "main", digest, pieces(), ctx);
    expect(batches.length).toBeGreaterThan(16);
    expect(Math.max(...batches)).toBeLessThanOrEqual(BATCH_LIMIT);
    // Every chunk went up, and the splice names them in order.
    expect(spliced.reduce((n, h) => n + stored.get(h)!, 0)).toBe(blob.byteLength);
  });

  it("sends the chunks of a compressed Write zstd-compressed, within the batch limit and the inflated bound", async () => {
    const ctx = context();
    const plan = await chunkPolicy(transport)(ctx, "main");
    expect(plan?.zstdBatches).toBe(true);
    // Log-like bytes that compress several times over.
    const x = pseudoRandom(MiB, 11);
    const lines: string[] = [];
    for (let i = 0, n = 0; n < 16 * MiB; i++) {
      const line = `INFO: compiled //pkg/${x[i % MiB]! % 50}:lib${x[(i + 1) % MiB]} in ${x[(i + 2) % MiB]! % 90} ms\n`;
      lines.push(line);
      n += line.length;
    }
    const blob = Buffer.from(lines.join("")).subarray(0, 16 * MiB);
    const digest = { hash: createHash("sha256").update(blob).digest("hex"), size: blob.byteLength };
    batches.length = 0;
    inflated.length = 0;
    async function* pieces() {
      for (let at = 0; at < blob.byteLength; at += 256 * 1024) yield blob.subarray(at, at + 256 * 1024);
    }
    await writeChunked(transport, plan!, "main", digest, pieces(), ctx, true);
    const sent = batches.reduce((n, b) => n + b, 0);
    expect(sent).toBeLessThan(blob.byteLength / 4);
    expect(Math.max(...batches)).toBeLessThanOrEqual(BATCH_LIMIT);
    expect(Math.max(...inflated)).toBeLessThanOrEqual(16 * MiB);
    expect(spliced.reduce((n, h) => n + stored.get(h)!, 0)).toBe(blob.byteLength);
  });
});
