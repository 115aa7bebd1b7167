// `kiln bridge`: native gRPC (HTTP/2 cleartext) in front of the worker, which only speaks HTTP/1.1.
// Cloudflare's edge does this conversion in production (gRPC-enabled zones turn gRPC into
// gRPC-web); locally and on CI hosts without such a domain, this process does it.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { connectNodeAdapter, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  ActionCache,
  Capabilities,
  ContentAddressableStorage,
  Execution,
} from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { Fetch, Push } from "../src/gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { ByteStream } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { ResultStoreDownload } from "../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { ResultStoreFileDownload } from "../src/gen/google/devtools/resultstore/v2/resultstore_file_download_pb.ts";
import { ResultStoreUpload } from "../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { Operations } from "../src/gen/google/longrunning/operations_pb.ts";
import { PublishBuildEvent } from "../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { RemoteActions } from "../src/gen/kiln/invocation/v1/remote_actions_pb.ts";
import { BuildEventIngest } from "../src/gen/kiln/bes/v1/ingest_pb.ts";
import { relayBuildToolEvents } from "./bes-relay.ts";
import { byteStreamRead } from "./bytestream-read.ts";
import { chunkPolicy } from "./chunked-blobs.ts";
import { byteStreamWrite, smallWrites } from "./bytestream-write.ts";
import { rawSmallWrite } from "./bytestream-write-raw.ts";
import { fixMiscodedTrailers } from "./errors.ts";
import { logFailure, reportFailures, type Log } from "./failures.ts";
import { forwardMethod } from "./forward.ts";
import { withKey } from "./metadata.ts";
import { MAX_SINGLE_REQUEST_BYTES, relayable, relayCall, relaySingleMessage, workerAgent, type RelayOptions } from "./relay.ts";

/** Every service the worker serves over gRPC-web, and so the bridge over native gRPC. */
export const SERVICES: DescService[] = [Capabilities, ContentAddressableStorage, ActionCache, Execution, ByteStream, Operations, ResultStoreUpload, ResultStoreDownload, ResultStoreFileDownload, PublishBuildEvent, BuildEventIngest, Fetch, Push, RemoteActions];

export interface BridgeOptions {
  /** The worker's origin, e.g. http://127.0.0.1:8787. */
  upstream: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  log?: Log;
  /**
   * An API key for Build Event Service calls that carry none: Bazel 4.2.3 cannot send headers on
   * --bes_backend, so against a worker with API keys the bridge adds this one.
   */
  besApiKey?: string;
  /**
   * Blobs larger than this are written and read as chunks (SplitBlob/SpliceBlob); 0: never.
   * Default: the worker's max_cas_blob_size_bytes, the most one request carries past its edge.
   */
  chunkAboveBytes?: number;
}

export interface Bridge {
  port: number;
  close(): Promise<void>;
}

/** The bridge's HTTP/2 receive window, per stream and per connection (grpc-java starts at 1 MiB). */
const RECEIVE_WINDOW = 4 * 1024 * 1024;

export async function startBridge({ upstream, host = "127.0.0.1", port = 8980, log = console.error, besApiKey, chunkAboveBytes }: BridgeOptions): Promise<Bridge> {
  // No compression on either hop: blobs are mostly incompressible and both hops are local, so
  // gzip only burns the CPU the worker needs (it halved ByteStream.Read throughput here).
  const transport = createGrpcWebTransport({ baseUrl: upstream, httpVersion: "1.1", acceptCompression: [] });
  const shutdown = new AbortController();
  const chunking = chunkPolicy(transport, chunkAboveBytes);
  // Build events: Bazel 4.2.3 sends no headers on --bes_backend, so the bridge may add a key.
  const besTransport = besApiKey
    ? createGrpcWebTransport({ baseUrl: upstream, httpVersion: "1.1", acceptCompression: [], interceptors: [withKey(besApiKey)] })
    : transport;
  // Calls in protobuf relay as bytes (./relay.ts); connect-node serves the rest: requests in
  // JSON or compressed, the bidi build-event stream, ByteStream.Write (which reads its messages).
  const relayOptions: RelayOptions = {
    base: upstream.replace(/\/+$/, ""),
    agent: workerAgent(upstream),
    onError: (path, err) => logFailure(log, path, err),
  };
  const besRelayOptions: RelayOptions = { ...relayOptions, key: besApiKey };
  const raw = new Map<string, (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void>();
  const batcher = smallWrites(transport);
  const handler = connectNodeAdapter({
    routes(router) {
      for (const service of SERVICES) {
        const bes = service === PublishBuildEvent || service === BuildEventIngest;
        for (const method of service.methods) {
          const path = `/${service.typeName}/${method.name}`;
          if (method === ByteStream.method.read) raw.set(path, byteStreamRead(relayOptions));
          else if (method === ByteStream.method.write) {
            // Small blobs are read from the HTTP/2 stream (bytestream-write-raw.ts); connect-node serves the rest.
            router.rpc(ByteStream.method.write, byteStreamWrite(upstream, transport, chunking, batcher));
            raw.set(path, rawSmallWrite(batcher, transport, relayOptions, (req, res) => void handler(req, fixMiscodedTrailers(res))));
          }
          else if (method === PublishBuildEvent.method.publishBuildToolEventStream) {
            router.rpc(PublishBuildEvent.method.publishBuildToolEventStream, relayBuildToolEvents(besTransport));
            continue;
          } else if (method.methodKind !== "bidi_streaming") {
            const opts = bes ? besRelayOptions : relayOptions;
            const single = method.methodKind === "unary" || method.methodKind === "server_streaming";
            raw.set(path, single ? (req, res) => relaySingleMessage(req, res, opts) : (req, res) => relayCall(req, res, opts));
          }
          // Also served by connect-node, for the requests the relay leaves to it.
          if (method !== ByteStream.method.write) forwardMethod(router, method, bes ? besTransport : transport);
        }
      }
    },
    // Compressed requests are still accepted; responses are never compressed.
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    // As the byte relay's cap: connect's default (4 GiB) would let one message, or one gzip bomb
    // inflated, fill the bridge's memory. A Write's messages are each far smaller.
    readMaxBytes: MAX_SINGLE_REQUEST_BYTES,
    interceptors: [reportFailures(log)],
    // Closing the bridge cancels calls in flight, and with them their upstream requests.
    shutdownSignal: shutdown.signal,
  });
  // A large receive window: with HTTP/2's 64 KiB default a client sends a FindMissingBlobs of
  // 10,000 digests (700 KB) or a blob chunk in a dozen round trips of window updates.
  // No cap on a session's buffered memory (Node's default is 10 MB): a client with a dozen large
  // reads it is slow to take would have every new call on its connection refused
  // (ENHANCE_YOUR_CALM). Each stream buffers at most about 1 MiB (relay.ts) before its upstream
  // pauses, so streams bound the memory; grpc-js's own server does the same.
  const server = http2.createServer({ settings: { initialWindowSize: RECEIVE_WINDOW }, maxSessionMemory: Number.MAX_SAFE_INTEGER }, (req, res) => {
    const relay = raw.get(req.url);
    if (relay && relayable(req)) relay(req, res);
    else void handler(req, fixMiscodedTrailers(res));
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.setLocalWindowSize(RECEIVE_WINDOW);
    s.on("close", () => sessions.delete(s));
  });
  // A client that breaks its connection must not take the bridge down: log it and carry on.
  server.on("sessionError", (e) => log(`kiln bridge: connection error: ${e.message}`));

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (e) => log(`kiln bridge: server error: ${e.message}`));

  return {
    port: (server.address() as AddressInfo).port,
    close() {
      shutdown.abort();
      relayOptions.agent.destroy();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // gRPC clients keep idle connections open; server.close() alone would wait for them.
      for (const s of sessions) s.destroy();
      return closed;
    },
  };
}
