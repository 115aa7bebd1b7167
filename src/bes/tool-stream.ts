// BEP events as the requests of a PublishBuildToolEventStream, wrapped the way Bazel wraps them
// (an OrderedBuildEvent whose bazel_event is an Any of build_event_stream.BuildEvent), ending with
// component_stream_finished. `kiln upload-bep` and the tests turn a --build_event_binary_file into
// such a stream; the bridge relays Bazel's own.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  BuildEvent_BuildComponentStreamFinished_FinishType as FinishType,
  StreamId_BuildComponent,
  type StreamIdSchema,
} from "../gen/google/devtools/build/v1/build_events_pb.ts";
import { PublishBuildToolEventStreamRequestSchema, type PublishBuildToolEventStreamRequest } from "../gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { BuildEventSchema, type BuildEvent } from "./bep.ts";

/**
 * The stream of a recorded build: its invocation id is the build's (BuildStarted.uuid), and so is
 * its build id, so uploading the same file twice is one stream replayed, not a second stream.
 */
export const recordedStream = (invocationId: string): MessageInitShape<typeof StreamIdSchema> => ({
  buildId: invocationId,
  invocationId,
  component: StreamId_BuildComponent.TOOL,
});

/**
 * How much one IngestBuildToolEvents call carries (the bridge's and upload-bep's batches): Bazel's
 * events are a few KiB, a call is one Durable Object transaction, and the worker takes 10 MiB.
 */
export const BATCH_EVENTS = 200;
export const BATCH_BYTES = 4 * 1024 * 1024;

/** The BEP bytes a request carries (what makes a batch large). */
export function eventBytes(r: PublishBuildToolEventStreamRequest): number {
  const e = r.orderedBuildEvent?.event?.event;
  return e?.case === "bazelEvent" ? e.value.value.byteLength : 0;
}

/**
 * The request carrying BEP event `ev` as sequence number `seq` (from 1). `eventTime` is when the
 * tool sent it: unknown for a recorded file (its timings then come from the events themselves).
 */
export function toolEventRequest(streamId: MessageInitShape<typeof StreamIdSchema>, seq: number, ev: BuildEvent, eventTime?: Timestamp): PublishBuildToolEventStreamRequest {
  return create(PublishBuildToolEventStreamRequestSchema, {
    orderedBuildEvent: { streamId, sequenceNumber: BigInt(seq), event: { eventTime, event: { case: "bazelEvent", value: anyPack(BuildEventSchema, ev) } } },
    notificationKeywords: seq === 1 ? ["protocol_name=BEP"] : [],
  });
}

/** The last request of a stream: the tool says it sent everything. */
export function streamFinishedRequest(streamId: MessageInitShape<typeof StreamIdSchema>, seq: number): PublishBuildToolEventStreamRequest {
  return create(PublishBuildToolEventStreamRequestSchema, {
    orderedBuildEvent: {
      streamId,
      sequenceNumber: BigInt(seq),
      event: { event: { case: "componentStreamFinished", value: { type: FinishType.FINISHED } } },
    },
  });
}

/** The invocation id of a recorded build: its first event is BuildStarted. */
export function invocationIdOf(first: BuildEvent | undefined): string {
  if (first?.payload.case !== "started" || !first.payload.value.uuid) throw new Error("the file does not start with a BuildStarted event (is it a --build_event_binary_file?)");
  return first.payload.value.uuid;
}
