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
import type { DescMethodUnary, DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type Transport } from "@connectrpc/connect";
import {
  Capabilities,
  ChunkingFunction_Value,
  ContentAddressableStorage,
} from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import type { BlobDigest } from "../src/shared/digest.ts";
import { chunkPlanOf, chunkStream, type ChunkPlan } from "../src/shared/fastcdc.ts";
import { forwardedMetadata } from "./metadata.ts";

/** Bytes of chunks per BatchUpdateBlobs call at most, under the worker's usual 4 MiB batch limit. */
const BATCH_BYTES = 3 * 1024 * 1024;
/** What a batch entry adds to its data in the request (digest, status framing): a generous bound. */
const ENTRY_OVERHEAD = 128;

/** The chunking of a worker's blobs, and the most one of its batches may carry (max_batch_total_size_bytes). */
export interface BridgeChunkPlan extends ChunkPlan {
  batchLimit: number;
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
          return plan && { ...plan, batchLimit: advertised > 0 ? Math.min(advertised, BATCH_BYTES) : BATCH_BYTES };
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

/**
 * Stores `blob` from `bytes` (already checked against the Write's offsets and size) as chunks and
 * a SpliceBlob. INVALID_ARGUMENT, before anything is spliced, when the bytes do not hash to it.
 */
export async function writeChunked(
  upstream: Transport,
  plan: BridgeChunkPlan,
  instanceName: string,
  blob: BlobDigest,
  bytes: AsyncIterable<Uint8Array>,
  ctx: HandlerContext,
): Promise<void> {
  const whole = createHash("sha256");
  const chunks: BlobDigest[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  let batch: { d: BlobDigest; data: Uint8Array }[] = [];
  let batchBytes = 0;
  const send = async () => {
    const toSend = batch;
    batch = [];
    batchBytes = 0;
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
    // Sent before a chunk would take the batch past the worker's limit (a chunk is up to 4x the
    // average: 2 MiB by default). A chunk over the limit on its own goes alone, for the worker to judge.
    const bytes = data.byteLength + ENTRY_OVERHEAD;
    if (batch.length && batchBytes + bytes > plan.batchLimit) await send();
    batch.push({ d, data });
    batchBytes += bytes;
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
async function uploadMissing(upstream: Transport, instanceName: string, chunks: { d: BlobDigest; data: Uint8Array }[], ctx: HandlerContext) {
  const missing = await call(upstream, ContentAddressableStorage.method.findMissingBlobs, ctx, {
    instanceName,
    blobDigests: chunks.map((c) => proto(c.d)),
  });
  const wanted = new Set(missing.missingBlobDigests.map((d) => d.hash));
  const requests = chunks.filter((c) => wanted.has(c.d.hash)).map((c) => ({ digest: proto(c.d), data: c.data }));
  if (requests.length === 0) return;
  const res = await call(upstream, ContentAddressableStorage.method.batchUpdateBlobs, ctx, { instanceName, requests });
  const bad = res.responses.find((r) => r.status && r.status.code !== 0);
  if (bad?.status) throw new ConnectError(`storing chunk ${bad.digest?.hash}/${bad.digest?.sizeBytes}: ${bad.status.message}`, bad.status.code as Code);
}
