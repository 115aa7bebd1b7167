// FindMissingBlobs over gRPC-web without the generic codec: what `kiln bridge` (and so every
// native gRPC client) and browser tools send. The request is read from its bytes and answered by
// copying the missing digests' bytes (find-missing-wire.ts); the work itself is the same
// findMissingAt the Connect router calls, behind the same request gate. Measured through the
// bridge, a FindMissing of 10,000 digests spent about a fifth of its time decoding, validating
// and re-encoding digests generically.
//
// Only a plain request takes this lane: binary gRPC-web, uncompressed, with a Content-Length
// within the router's limit, a valid grpc-timeout, one envelope and a message the strict reader
// accepts. Anything else, including every request this lane cannot read, goes to the Connect
// router unchanged (with the bytes already read), which answers it, or names its fault, as ever.
import { createHandlerContext } from "@connectrpc/connect";
import { encodeEnvelope, type UniversalHandlerFn, type UniversalServerRequest } from "@connectrpc/connect/protocol";
import { parseTimeout, setTrailerStatus, trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { ContentAddressableStorage } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { requireCaller } from "../caller.ts";
import { requestIdOf, withRequestId } from "../request-id.ts";
import { findMissingAt } from "../services/cas.ts";
import { readFindMissing, writeFindMissingResponse } from "./find-missing-wire.ts";

const method = ContentAddressableStorage.method.findMissingBlobs;
export const FIND_MISSING_PATH = `/${ContentAddressableStorage.typeName}/${method.name}`;

const PLAIN_TYPES = new Set(["application/grpc-web", "application/grpc-web+proto"]);
const ENVELOPE_HEADER = 5;

async function* replay(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  if (bytes.byteLength) yield bytes;
}

/**
 * The body, announced as `length` bytes; `whole` is false if it ends short, runs over or breaks
 * off (the router then answers what arrived, as it would have).
 */
async function readExactly(body: AsyncIterable<Uint8Array>, length: number): Promise<{ bytes: Uint8Array; whole: boolean }> {
  const bytes = new Uint8Array(length);
  let at = 0;
  try {
    for await (const chunk of body) {
      if (at + chunk.byteLength > length) return { bytes: new Uint8Array(await new Blob([bytes.subarray(0, at), chunk]).arrayBuffer()), whole: false };
      bytes.set(chunk, at);
      at += chunk.byteLength;
    }
  } catch {
    return { bytes: bytes.subarray(0, at), whole: false };
  }
  return at === length ? { bytes, whole: true } : { bytes: bytes.subarray(0, at), whole: false };
}

/** `fallback` (the Connect router's handler for FindMissingBlobs) answers what this lane does not take. */
export function findMissingFastLane(fallback: UniversalHandlerFn, readMaxBytes: number): UniversalHandlerFn {
  return async (req: UniversalServerRequest) => {
    const h = req.header;
    const length = Number(h.get("content-length") ?? NaN);
    const encoding = h.get("grpc-encoding");
    const timeout = parseTimeout(h.get("grpc-timeout"), Number.MAX_SAFE_INTEGER); // the router's default ceiling
    const plain =
      req.method === "POST" &&
      PLAIN_TYPES.has((h.get("content-type") ?? "").toLowerCase()) &&
      (encoding === null || encoding === "identity") &&
      !timeout.error &&
      length >= ENVELOPE_HEADER &&
      length <= readMaxBytes + ENVELOPE_HEADER &&
      req.body !== null &&
      typeof req.body === "object" &&
      Symbol.asyncIterator in req.body;
    if (!plain) return fallback(req);
    const { bytes, whole } = await readExactly(req.body as AsyncIterable<Uint8Array>, length);
    const declared = bytes.byteLength >= ENVELOPE_HEADER ? new DataView(bytes.buffer, bytes.byteOffset).getUint32(1) : -1;
    const message = bytes.subarray(ENVELOPE_HEADER);
    const wire = whole && bytes[0] === 0 && declared === message.byteLength ? readFindMissing(message) : undefined;
    if (!wire) return fallback({ ...req, body: replay(bytes) });

    const ctx = createHandlerContext({
      service: ContentAddressableStorage,
      method,
      protocolName: "grpc-web",
      requestMethod: req.method,
      url: req.url,
      timeoutMs: timeout.timeoutMs,
      requestSignal: req.signal,
      requestHeader: h,
      contextValues: req.contextValues,
    });
    const trailer = new Headers({ "grpc-status": "0" });
    let answer: Uint8Array | undefined;
    try {
      await requireCaller(h); // the router's request gate
      const missing = await findMissingAt(ctx, {
        instanceName: wire.instanceName,
        digestFunction: wire.digestFunction,
        count: wire.digests.length,
        digests: () => wire.digests,
      });
      answer = writeFindMissingResponse(message, wire, missing, ENVELOPE_HEADER);
      new DataView(answer.buffer).setUint32(1, answer.byteLength - ENVELOPE_HEADER); // flags 0: a message
    } catch (e) {
      setTrailerStatus(trailer, withRequestId(e, requestIdOf(h)));
    } finally {
      ctx.abort(); // its deadline timer, if any
    }
    const frames = [...(answer ? [answer] : []), encodeEnvelope(trailerFlag, trailerSerialize(trailer))];
    return {
      status: 200,
      header: new Headers({ "content-type": "application/grpc-web+proto" }),
      body: (async function* () {
        yield* frames;
      })(),
    };
  };
}
