// FindMissingBlobs over gRPC-web without the generic codec: what `kiln bridge` (and so every
// native gRPC client) and browser tools send. The request is read from its bytes and answered by
// copying the missing digests' bytes (find-missing-wire.ts); the work itself is the same
// findMissingAt the Connect router calls, behind the same request gate. Measured through the
// bridge, a FindMissing of 10,000 digests spent about a fifth of its time decoding, validating
// and re-encoding digests generically.
//
// Only a plain request (grpc-web-lane.ts: binary gRPC-web, uncompressed, a body within the router's
// limit, a valid grpc-timeout, one envelope) whose message the strict reader accepts takes this
// lane. Anything else, including every request this lane cannot read, goes to the Connect router
// unchanged (with the bytes already read), which answers it, or names its fault, as ever; so does
// every caller the request gate refuses, before its body is read.
import type { UniversalHandlerFn, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc-web";
import { ContentAddressableStorage } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { admitCaller } from "../caller.ts";
import { requestIdOf, withRequestId } from "../request-id.ts";
import { findMissingAt } from "../services/cas.ts";
import { readFindMissing, writeFindMissingResponse } from "./find-missing-wire.ts";
import { ENVELOPE_HEADER, GRPC_WEB_ANSWER, laneContext, readPlainRequest, replayed, trailerFrame } from "./grpc-web-lane.ts";

const method = ContentAddressableStorage.method.findMissingBlobs;
export const FIND_MISSING_PATH = `/${ContentAddressableStorage.typeName}/${method.name}`;

/** `fallback` (the Connect router's handler for FindMissingBlobs) answers what this lane does not take. */
export function findMissingFastLane(fallback: UniversalHandlerFn, readMaxBytes: number): UniversalHandlerFn {
  return async (req: UniversalServerRequest) => {
    // The router's gate, before the body is read; findMissingAt's scope awaits the rate verdict
    // once the body is in, before any lookup.
    try {
      await admitCaller(req.header, req.url);
    } catch {
      return fallback(req); // whose gate refuses the caller, as it would have without this lane
    }
    const read = await readPlainRequest(req, readMaxBytes);
    if ("rest" in read) return fallback(read.rest);
    const { message, timeoutMs } = read.plain;
    const wire = readFindMissing(message);
    if (!wire) return fallback(replayed(req, read.plain));

    const ctx = laneContext(req, ContentAddressableStorage, method, timeoutMs);
    const trailer = new Headers({ "grpc-status": "0" });
    let answer: Uint8Array | undefined;
    try {
      const missing = await findMissingAt(ctx, {
        instanceName: wire.instanceName,
        digestFunction: wire.digestFunction,
        count: wire.digests.length,
        digests: () => wire.digests,
      });
      answer = writeFindMissingResponse(message, wire, missing, ENVELOPE_HEADER);
      new DataView(answer.buffer).setUint32(1, answer.byteLength - ENVELOPE_HEADER); // flags 0: a message
    } catch (e) {
      setTrailerStatus(trailer, withRequestId(e, requestIdOf(req.header)));
    } finally {
      ctx.abort(); // its deadline timer, if any
    }
    const frames = [...(answer ? [answer] : []), trailerFrame(trailer)];
    return {
      status: 200,
      header: new Headers(GRPC_WEB_ANSWER),
      body: (async function* () {
        yield* frames;
      })(),
    };
  };
}
