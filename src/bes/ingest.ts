// A batch of one PublishBuildToolEventStream's requests, applied to the invocation the stream
// feeds, inside the InvocationDO's transaction (all of the batch or nothing).
//
// Exactly once: the invocation is created as an UploadBatch invocation, and event N is applied as
// the UploadBatch with resume_token "seq N-1" and next_resume_token "seq N". So the committed
// sequence number is the stored resume token, an event at or below it is a replay (skipped and
// acknowledged again), and the next one must be exactly one higher. The invocation belongs to the
// stream that created it (build id and component); another stream, or an invocation made through
// ResultStoreUpload, is refused.
import { create, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, invalidArgument } from "../errors.ts";
import { BuildEvent_BuildComponentStreamFinished_FinishType as FinishType, type StreamId } from "../gen/google/devtools/build/v1/build_events_pb.ts";
import type { PublishBuildToolEventStreamRequest } from "../gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { CreateInvocationRequestSchema, UploadBatchRequestSchema, UploadRequest_UploadOperation, UploadRequestSchema, type UploadRequest } from "../gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import type { IngestBuildToolEventsRequest, IngestBuildToolEventsResponseSchema } from "../gen/kiln/bes/v1/ingest_pb.ts";
import { uploadBatch } from "../resultstore/batch.ts";
import { keyOf, nameOf } from "../resultstore/names.ts";
import { runUpload } from "../resultstore/upload-rpc.ts";
import { META, type Uploader } from "../resultstore/uploader.ts";
import { TestSuiteSchema } from "../gen/google/devtools/resultstore/v2/test_suite_pb.ts";
import { BAZEL_EVENT_TYPE, BuildEventSchema, type BuildEvent } from "./bep.ts";
import { mapBuildEvent } from "./map-event.ts";

export interface IngestCall {
  tenant: string;
  invocationId: string;
  /**
   * TestSuites (binary) parsed from the test.xml files the batch's TestResult events name, by
   * file URI: read from the CAS before the transaction, which cannot wait on storage.
   */
  testSuites?: Record<string, Uint8Array>;
}

/** Meta key: the stream that owns this invocation ("{build_id}/{component}"). */
const STREAM = "bes_stream";

const TOKEN_PREFIX = "bes-seq-";
const tokenOf = (seq: bigint) => btoa(TOKEN_PREFIX + seq).replace(/\+/g, "-").replace(/\//g, "_");

/** The stream's committed sequence number, from the stored resume token. */
function committedOf(u: Uploader): bigint {
  const token = u.table.meta<string>(META.resumeToken) ?? "";
  let text = "";
  try {
    text = atob(token.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    // not one of ours: below
  }
  const m = new RegExp(`^${TOKEN_PREFIX}(\\d+)$`).exec(text);
  if (!m) throw new ConnectError("another uploader has written to this invocation with UploadBatch since the stream's last event", Code.FailedPrecondition);
  return BigInt(m[1]!);
}

const streamKey = (s: StreamId) => `${s.buildId}/${s.component}`;

function sameStream(a: StreamId, b: StreamId | undefined): boolean {
  return !!b && a.buildId === b.buildId && a.invocationId === b.invocationId && a.component === b.component;
}

/** The stream id every request of the batch must carry (the first one's), checked. */
export function streamOf(requests: readonly PublishBuildToolEventStreamRequest[]): StreamId {
  const first = requests[0]?.orderedBuildEvent?.streamId;
  if (!first) throw invalidArgument("the batch is empty or its first request has no ordered_build_event.stream_id", "requests");
  if (!first.buildId) throw invalidArgument("stream_id.build_id is required", "requests[0].ordered_build_event.stream_id.build_id");
  requests.forEach((r, i) => {
    if (!sameStream(first, r.orderedBuildEvent?.streamId)) {
      throw invalidArgument(`requests[${i}] belongs to another stream than requests[0]`, `requests[${i}].ordered_build_event.stream_id`);
    }
  });
  return first;
}

/** Creates the invocation on the stream's first batch; later, checks the stream owns it. */
function open(u: Uploader, stream: StreamId, call: IngestCall): void {
  if (!u.exists()) {
    const req = create(CreateInvocationRequestSchema, { invocationId: u.invocationId, invocation: {}, initialResumeToken: tokenOf(0n) });
    runUpload(u, "createInvocation", req, call);
    u.table.setMeta(STREAM, streamKey(stream));
    return;
  }
  const owner = u.table.meta<string>(STREAM);
  if (owner === undefined) throw new ConnectError(`invocation ${u.invocationId} exists and is not fed by a build event stream`, Code.AlreadyExists);
  if (owner !== streamKey(stream)) throw new ConnectError(`invocation ${u.invocationId} is fed by another build event stream (${owner})`, Code.FailedPrecondition);
}

/** The requests one BES event makes: a BEP event's mapping, or finalize when the tool's stream finished. */
function requestsFor(u: Uploader, r: PublishBuildToolEventStreamRequest, field: string, testSuites: Record<string, Uint8Array>): UploadRequest[] {
  const event = r.orderedBuildEvent?.event?.event;
  if (!event?.case) throw invalidArgument("the event is empty", `${field}.ordered_build_event.event`);
  if (event.case === "componentStreamFinished") {
    return event.value.type === FinishType.FINISHED && !u.finalized()
      ? [create(UploadRequestSchema, { uploadOperation: UploadRequest_UploadOperation.FINALIZE, resource: { case: "invocation", value: {} } })]
      : [];
  }
  const bep = bazelEventOf(r, field);
  if (!bep) return []; // lifecycle-style events on the tool stream carry nothing ResultStore keeps
  return mapBuildEvent(bep, {
    invocationId: u.invocationId,
    exists: (k) => !!u.table.get(k),
    load: (k) => u.load(k)?.msg as never,
    eventTime: r.orderedBuildEvent?.event?.eventTime,
    testSuite: (uri) => {
      const bytes = testSuites[uri];
      return bytes ? fromBinary(TestSuiteSchema, bytes) : undefined;
    },
  });
}

/** The BEP event a tool-stream request carries (undefined for other events), checked. */
export function bazelEventOf(r: PublishBuildToolEventStreamRequest, field: string): BuildEvent | undefined {
  const event = r.orderedBuildEvent?.event?.event;
  if (event?.case !== "bazelEvent") return undefined;
  const any = event.value;
  if (any.typeUrl.replace(/^.*\//, "") !== BAZEL_EVENT_TYPE) {
    throw invalidArgument(`bazel_event is a ${any.typeUrl || "(no type)"}, not a ${BAZEL_EVENT_TYPE}`, `${field}.bazel_event`);
  }
  try {
    return fromBinary(BuildEventSchema, any.value);
  } catch (e) {
    throw invalidArgument(`bazel_event does not decode as ${BAZEL_EVENT_TYPE}: ${(e as Error).message}`, `${field}.bazel_event`);
  }
}

export function ingestBuildEvents(u: Uploader, req: IngestBuildToolEventsRequest, call: IngestCall): MessageShape<typeof IngestBuildToolEventsResponseSchema> {
  const stream = streamOf(req.requests);
  if (stream.invocationId.toLowerCase() !== u.invocationId) throw invalidArgument(`stream_id.invocation_id is not ${u.invocationId}`, "requests[0].ordered_build_event.stream_id.invocation_id");
  open(u, stream, call);
  let committed = committedOf(u);
  const parent = nameOf(keyOf("invocation", u.invocationId));
  req.requests.forEach((r, i) => {
    const field = `requests[${i}]`;
    const seq = r.orderedBuildEvent!.sequenceNumber;
    if (seq < 1n) throw invalidArgument(`${field}: sequence_number ${seq} is not positive (a stream counts from 1)`, `${field}.ordered_build_event.sequence_number`);
    if (seq <= committed) return; // a replay of a committed event
    if (seq !== committed + 1n) {
      throw new ConnectError(`${field}: sequence_number ${seq} is out of order: the next one is ${committed + 1n}`, Code.FailedPrecondition);
    }
    try {
      const uploadRequests = requestsFor(u, r, field, call.testSuites ?? {});
      if (uploadRequests.length) {
        uploadBatch(u, create(UploadBatchRequestSchema, { parent, resumeToken: tokenOf(committed), nextResumeToken: tokenOf(seq), uploadRequests }));
      } else {
        u.table.setMeta(META.resumeToken, tokenOf(seq));
      }
    } catch (e) {
      if (e instanceof ConnectError) throw new ConnectError(`sequence_number ${seq}: ${e.rawMessage}`, e.code, undefined, e.details as never);
      throw e;
    }
    committed = seq;
  });
  return { $typeName: "kiln.bes.v1.IngestBuildToolEventsResponse", streamId: stream, committedSequenceNumber: committed, invocation: parent };
}
