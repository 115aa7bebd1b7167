// Capabilities.GetCapabilities: what this server truly implements, and nothing more.
import type { ServiceImpl } from "@connectrpc/connect";
import {
  Capabilities,
  DigestFunction_Value,
  SymlinkAbsolutePathStrategy_Value,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { chunkAvgSize, executionConfigured, maxBatchTotalSize, maxUploadBlobSize } from "../config.ts";
import { PRIORITY_RANGE } from "./execution.ts";
import { SUPPORTED_NODE_PROPERTIES } from "./node-properties.ts";
import { scopeFor } from "./scope.ts";
import { SUPPORTED_COMPRESSORS } from "./compression.ts";

export const capabilitiesService: ServiceImpl<typeof Capabilities> = {
  async getCapabilities(req, ctx) {
    const scope = await scopeFor(ctx, req.instanceName, "read");
    return {
      cacheCapabilities: {
        digestFunctions: [DigestFunction_Value.SHA256],
        actionCacheUpdateCapabilities: { updateEnabled: scope.principal.canWrite },
        // Cache priorities are accepted and ignored: one storage class.
        cachePriorityCapabilities: { priorities: [{ minPriority: 0, maxPriority: 0 }] },
        maxBatchTotalSizeBytes: BigInt(maxBatchTotalSize()),
        // Output symlinks are stored as given; the runner decides what it accepts.
        symlinkAbsolutePathStrategy: SymlinkAbsolutePathStrategy_Value.ALLOWED,
        // zstd on ByteStream (compressed-blobs) and in batches; IDENTITY is implied.
        supportedCompressors: [...SUPPORTED_COMPRESSORS],
        supportedBatchUpdateCompressors: [...SUPPORTED_COMPRESSORS],
        // What one upload request carries under the edge's body cap; larger blobs go up as
        // chunks and SpliceBlob, and SplitBlob cuts stored blobs with FastCDC 2020.
        maxCasBlobSizeBytes: BigInt(maxUploadBlobSize()),
        splitBlobSupport: true,
        spliceBlobSupport: true,
        fastCdc2020Params: { avgChunkSizeBytes: BigInt(chunkAvgSize()), seed: 0 },
      },
      executionCapabilities: {
        digestFunction: DigestFunction_Value.SHA256,
        digestFunctions: [DigestFunction_Value.SHA256],
        // Only when runners can connect (or containers start); clients then try remote execution.
        execEnabled: executionConfigured(scope.env) && scope.principal.canWrite,
        // ExecutionPolicy.priority orders each queue: lower runs sooner; values outside are clamped.
        executionPriorityCapabilities: { priorities: [{ minPriority: PRIORITY_RANGE.min, maxPriority: PRIORITY_RANGE.max }] },
        supportedNodeProperties: [...SUPPORTED_NODE_PROPERTIES],
      },
      deprecatedApiVersion: { major: 2, minor: 0 },
      lowApiVersion: { major: 2, minor: 0 },
      highApiVersion: { major: 2, minor: 3 },
    };
  },
};
