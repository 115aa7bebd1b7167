// `kiln upload-bep FILE`: a finished build's --build_event_binary_file into Kiln's ResultStore, for
// CI systems that cannot reach Kiln during the build. The file is read as a stream, one event at
// a time, and sent as the tool event stream Bazel would have sent (kiln.bes.v1 IngestBuildToolEvents,
// a batch per call). The stream's build id is the build's invocation id, so uploading a file again
// (or after a failure) resumes the same stream: what was committed is skipped, nothing is doubled.
import { createReadStream } from "node:fs";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { sizeDelimitedDecodeStream } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { BuildEventSchema } from "../src/bes/bep.ts";
import { BATCH_BYTES, BATCH_EVENTS, eventBytes, invocationIdOf, recordedStream, streamFinishedRequest, toolEventRequest } from "../src/bes/tool-stream.ts";
import { withKey } from "./metadata.ts";
import type { PublishBuildToolEventStreamRequest } from "../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import type { StreamIdSchema } from "../src/gen/google/devtools/build/v1/build_events_pb.ts";
import { BuildEventIngest } from "../src/gen/kiln/bes/v1/ingest_pb.ts";

/** A call that failed on the way (UNAVAILABLE, a dropped connection) is sent again: it is idempotent. */
const ATTEMPTS = 5;

export interface UploadOptions {
  /** The worker's origin, e.g. http://127.0.0.1:8787. */
  upstream: string;
  apiKey?: string;
  log?: (line: string) => void;
}

export interface UploadResult {
  invocationId: string;
  events: number;
}

/** The file did not decode as BEP from some point on. */
class NotBep extends Error {}

/** The file's BEP events, one at a time. */
async function* events(file: string) {
  try {
    yield* sizeDelimitedDecodeStream(BuildEventSchema, createReadStream(file));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code) throw e; // the file system's own error (ENOENT, …)
    throw new NotBep((e as Error).message);
  }
}

export async function uploadBep(file: string, { upstream, apiKey, log = () => {} }: UploadOptions): Promise<UploadResult> {
  const transport = createGrpcWebTransport({ baseUrl: upstream, httpVersion: "1.1", interceptors: apiKey ? [withKey(apiKey)] : [] });
  const client = createClient(BuildEventIngest, transport);
  let stream: MessageInitShape<typeof StreamIdSchema> | undefined;
  let batch: PublishBuildToolEventStreamRequest[] = [];
  let bytes = 0;
  let seq = 0;
  /** Whether the last event read was Bazel's last (BuildEvent.last_message). */
  let ended = false;

  const send = async () => {
    if (batch.length === 0) return;
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await client.ingestBuildToolEvents({ requests: batch });
        log(`committed events up to ${res.committedSequenceNumber} of ${res.invocation}`);
        break;
      } catch (e) {
        const err = ConnectError.from(e);
        if (attempt >= ATTEMPTS || (err.code !== Code.Unavailable && err.code !== Code.Unknown && err.code !== Code.DeadlineExceeded)) throw err;
        await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
      }
    }
    batch = [];
    bytes = 0;
  };

  try {
    for await (const ev of events(file)) {
      stream ??= recordedStream(invocationIdOf(ev));
      ended = ev.lastMessage;
      const request = toolEventRequest(stream, ++seq, ev);
      const size = eventBytes(request);
      if (batch.length >= BATCH_EVENTS || (batch.length > 0 && bytes + size > BATCH_BYTES)) await send();
      batch.push(request);
      bytes += size;
    }
  } catch (e) {
    if (!(e instanceof NotBep)) throw e;
    if (seq === 0) throw new Error(`${file} is not a --build_event_binary_file (size-delimited build_event_stream.BuildEvent messages): ${e.message}`);
    // A file cut short (the build was killed): the events before the cut are uploaded, and said so.
    await send();
    throw new Error(`${file} ends inside event ${seq + 1} (${e.message}): the ${seq} events before it were uploaded to invocations/${stream!.invocationId}`);
  }
  if (!stream) throw new Error(`${file} holds no build events`);
  if (!ended) {
    // Cut between two events (Bazel writes each whole, so a killed build ends so): the stream is
    // left open, for the whole file to complete later, not finished on the build's behalf.
    await send();
    throw new Error(
      `${file} ends after event ${seq}, before Bazel's last event (last_message): the ${seq} events were uploaded to invocations/${stream.invocationId}, which stays open; upload the whole file to complete it`,
    );
  }
  batch.push(streamFinishedRequest(stream, ++seq));
  await send();
  return { invocationId: stream.invocationId!, events: seq - 1 };
}
