// Blobs too large for one request through the edge, moved as chunks (REAPI SplitBlob/SpliceBlob).
// Cloudflare caps a request body (100 MB on Free and Pro), and each Write the bridge relays is one
// request; so a Write of a blob over the threshold is cut with FastCDC 2020 as it arrives (the
// worker's own parameters, from Capabilities), the chunks the CAS lacks go up in BatchUpdateBlobs
// calls (each well under the cap), and SpliceBlob assembles and verifies the blob. Reads need no
// chunks: the edge caps request bodies, not responses, so the bridge reads any blob whole.
//
// The threshold is the worker's max_cas_blob_size_bytes when it offers SpliceBlob (the largest
// blob one request carries), or what --chunk-above sets. Nothing is held but a few chunks.
import { createHash } from "node:crypto";
import { promisify } from "node:util";
import { constants as zlib, zstdCompress } from "node:zlib";
import type { DescMethodUnary, DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type Transport } from "@connectrpc/connect";
import {
  Capabilities,
  ChunkingFunction_Value,
  Compressor_Value,
  ContentAddressableStorage,
} from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import type { BlobDigest } from "../src/shared/digest.ts";
import { chunkPlanOf, chunkStream, type ChunkPlan } from "../src/shared/fastcdc.ts";
import { forwardedMetadata } from "./metadata.ts";

/** Bytes of chunks per BatchUpdateBlobs call at most, under the worker's usual 4 MiB batch limit. */
const BATCH_BYTES = 3 * 1024 * 1024;
/** What a batch entry adds to its data in the request (digest, status framing): a generous bound. */
const ENTRY_OVERHEAD = 128;

/**
 * Uncompressed bytes of the zstd chunks in one batch at most: the worker inflates a batch's
 * compressed blobs in memory (Kiln allows 64 MiB), and compressed bytes alone do not bound that.
 */
const BATCH_INFLATED_BYTES = 16 * 1024 * 1024;

/**
 * The chunking of a worker's blobs, the most one of its batches may carry
 * (max_batch_total_size_bytes), and whether its batches take zstd (supported_batch_update_compressors).
 */
export interface BridgeChunkPlan extends ChunkPlan {
  batchLimit: number;
  zstdBatches: boolean;
}

const zstd = promisify(zstdCompress);

/** A chunk as zstd (level 1, off the event loop) when that is smaller; undefined otherwise. */
async function packed(data: Uint8Array): Promise<Uint8Array | undefined> {
  const out = await zstd(data, { params: { [zlib.ZSTD_c_compressionLevel]: 1 } });
  return out.byteLength < data.byteLength ? out : undefined;
}
/** BatchUpdateBlobs calls in flight while the rest of the blob is cut. */
const BATCHES_IN_FLIGHT = 4;

/** Which blobs of an instance move as chunks; null: none. */
export type ChunkPolicy = (ctx: HandlerContext, instanceName: string) => Promise<BridgeChunkPlan | null>;

/**
 * When the bridge chunks: `chunkAbove` when given (0: never), else from the worker's Capabilities
 * for the instance (asked once per instance, with the first caller's credentials). A worker that
 * will not say (a key without access, an older worker) gets whole blobs, and is asked again later.
 */
export function chunkPolicy(upstream: Transport, chunkAbove?: number): ChunkPolicy {
  const plans = new Map<string, Promise<BridgeChunkPlan | null>>();
  return (ctx, instanceName) => {
    if (chunkAbove === 0) return Promise.resolve(null);
    let plan = plans.get(instanceName);
    if (!plan) {
      plan = call(upstream, Capabilities.method.getCapabilities, ctx, { instanceName }).then(
        ({ cacheCapabilities: caps }) => {
          const plan = chunkPlanOf(
            {
              maxCasBlobSize: Number(caps?.maxCasBlobSizeBytes ?? 0n),
              splitAndSplice: Boolean(caps?.splitBlobSupport && caps.spliceBlobSupport),
              avgChunkSize: Number(caps?.fastCdc2020Params?.avgChunkSizeBytes ?? 0n),
              seed: caps?.fastCdc2020Params?.seed ?? 0,
            },
            chunkAbove,
          );
          // 0 is "no limit" (the spec's unset); ours then.
          const advertised = Number(caps?.maxBatchTotalSizeBytes ?? 0n);
          const zstdBatches = Boolean(caps?.supportedBatchUpdateCompressors.includes(Compressor_Value.ZSTD));
          return plan && { ...plan, batchLimit: advertised > 0 ? Math.min(advertised, BATCH_BYTES) : BATCH_BYTES, zstdBatches };
        },
        () => {
          plans.delete(instanceName);
          return null;
        },
      );
      plans.set(instanceName, plan);
    }
    return plan;
  };
}

async function call<I extends DescMessage, O extends DescMessage>(
  upstream: Transport,
  method: DescMethodUnary<I, O>,
  ctx: HandlerContext,
  message: MessageInitShape<I>,
): Promise<MessageShape<O>> {
  const res = await upstream.unary(method, ctx.signal, ctx.timeoutMs(), forwardedMetadata(ctx.requestHeader), message);
  return res.message;
}

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");
const proto = (d: BlobDigest) => ({ hash: d.hash, sizeBytes: BigInt(d.size) });

/** A chunk as it goes into a batch: its bytes, zstd-compressed when `zstd`. */
interface BatchEntry {
  d: BlobDigest;
  data: Uint8Array;
  zstd: boolean;
}

/**
 * Stores `blob` from `bytes` (already checked against the Write's offsets and size) as chunks and
 * a SpliceBlob. INVALID_ARGUMENT, before anything is spliced, when the bytes do not hash to it.
 * `compress`: the client sent the blob compressed, so its chunks go up zstd-compressed too where
 * the worker takes zstd batches (the bridge runs beside the client: its uplink is what it saves).
 */
export async function writeChunked(
  upstream: Transport,
  plan: BridgeChunkPlan,
  instanceName: string,
  blob: BlobDigest,
  bytes: AsyncIterable<Uint8Array>,
  ctx: HandlerContext,
  compress = false,
): Promise<void> {
  const whole = createHash("sha256");
  const chunks: BlobDigest[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  let batch: BatchEntry[] = [];
  let batchBytes = 0;
  let batchInflated = 0;
  const send = async () => {
    const toSend = batch;
    batch = [];
    batchBytes = 0;
    batchInflated = 0;
    while (inFlight.size >= BATCHES_IN_FLIGHT) await Promise.race(inFlight);
    if (failure) throw failure;
    const p = uploadMissing(upstream, instanceName, toSend, ctx)
      .catch((e: unknown) => void (failure ??= e))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };
  async function* hashed() {
    for await (const data of bytes) {
      whole.update(data);
      yield data;
    }
  }
  for await (const data of chunkStream(hashed(), plan.cdc)) {
    const d = { hash: sha256(data), size: data.byteLength };
    chunks.push(d);
    const small = compress && plan.zstdBatches ? await packed(data) : undefined;
    // Sent before a chunk would take the batch past the worker's limit (a chunk is up to 4x the
    // average: 2 MiB by default). A chunk over the limit on its own goes alone, for the worker to judge.
    const bytes = (small ?? data).byteLength + ENTRY_OVERHEAD;
    const inflated = small ? data.byteLength : 0;
    if (batch.length && (batchBytes + bytes > plan.batchLimit || batchInflated + inflated > BATCH_INFLATED_BYTES)) await send();
    batch.push({ d, data: small ?? data, zstd: small !== undefined });
    batchBytes += bytes;
    batchInflated += inflated;
  }
  if (batch.length) await send();
  await Promise.all(inFlight);
  if (failure) throw failure;
  const actual = whole.digest("hex");
  if (actual !== blob.hash) {
    throw new ConnectError(`the uploaded data hashes to ${actual}, not ${blob.hash}; nothing was stored`, Code.InvalidArgument);
  }
  await call(upstream, ContentAddressableStorage.method.spliceBlob, ctx, {
    instanceName,
    blobDigest: proto(blob),
    chunkDigests: chunks.map(proto),
    chunkingFunction: ChunkingFunction_Value.FAST_CDC_2020,
  });
}

/** BatchUpdateBlobs of the chunks FindMissingBlobs says the CAS lacks (similar blobs share chunks). */
async function uploadMissing(upstream: Transport, instanceName: string, chunks: BatchEntry[], ctx: HandlerContext) {
  const missing = await call(upstream, ContentAddressableStorage.method.findMissingBlobs, ctx, {
    instanceName,
    blobDigests: chunks.map((c) => proto(c.d)),
  });
  const wanted = new Set(missing.missingBlobDigests.map((d) => d.hash));
  const requests = chunks
    .filter((c) => wanted.has(c.d.hash))
    .map((c) => ({ digest: proto(c.d), data: c.data, compressor: c.zstd ? Compressor_Value.ZSTD : Compressor_Value.IDENTITY }));
  if (requests.length === 0) return;
  const res = await call(upstream, ContentAddressableStorage.method.batchUpdateBlobs, ctx, { instanceName, requests });
  const bad = res.responses.find((r) => r.status && r.status.code !== 0);
  if (bad?.status) throw new ConnectError(`storing chunk ${bad.digest?.hash}/${bad.digest?.sizeBytes}: ${bad.status.message}`, bad.status.code as Code);
}
