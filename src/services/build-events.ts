// The Build Event Service, for Bazel's --bes_backend: google.devtools.build.v1.PublishBuildEvent
// and Kiln's kiln.bes.v1.BuildEventIngest. A tool event stream feeds the ResultStore invocation
// named by its stream_id.invocation_id (Bazel's invocation id); its events are applied in that
// invocation's Durable Object through the UploadBatch rules (src/bes/ingest.ts, src/bes/map-event.ts).
//
// PublishBuildToolEventStream is bidirectional, which a Worker cannot hold (HTTP/1.1, gRPC-web):
// Bazel's stream goes through the bridge, which calls IngestBuildToolEvents per batch and
// acknowledges to Bazel each sequence number the worker committed.
import { fromBinary, toBinary, type MessageShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError, invalidArgument } from "../errors.ts";
import { PublishBuildEvent, type PublishBuildToolEventStreamRequest } from "../gen/google/devtools/build/v1/publish_build_event_pb.ts";
import {
  BuildEventIngest,
  IngestBuildToolEventsRequestSchema,
  IngestBuildToolEventsResponseSchema,
} from "../gen/kiln/bes/v1/ingest_pb.ts";
import { streamOf } from "../bes/ingest.ts";
import { testSuitesOf } from "../bes/test-suites.ts";
import { checkInvocationId } from "../resultstore/ids.ts";
import { invocationStub, responseOf } from "../resultstore/invocation-rpc.ts";
import { RESULTSTORE_UPLOAD_MAX } from "./limits.ts";
import { resultStoreScope } from "./scope.ts";

type IngestResponse = MessageShape<typeof IngestBuildToolEventsResponseSchema>;

async function ingest(ctx: HandlerContext, requests: PublishBuildToolEventStreamRequest[]): Promise<IngestResponse> {
  const { env, principal } = await resultStoreScope(ctx, "write");
  const stream = streamOf(requests);
  const invocationId = checkInvocationId(stream.invocationId, "requests[0].ordered_build_event.stream_id.invocation_id");
  const request = toBinary(IngestBuildToolEventsRequestSchema, { $typeName: "kiln.bes.v1.IngestBuildToolEventsRequest", requests });
  if (request.byteLength > RESULTSTORE_UPLOAD_MAX) {
    throw new ConnectError(`the batch is ${request.byteLength} bytes; at most ${RESULTSTORE_UPLOAD_MAX} are accepted: send fewer events at once`, Code.ResourceExhausted);
  }
  const testSuites = await testSuitesOf(ctx, requests);
  const result = await invocationStub(env, principal.tenant, invocationId).ingestBuildEvents(request, { tenant: principal.tenant, invocationId, testSuites });
  return fromBinary(IngestBuildToolEventsResponseSchema, responseOf(result));
}

export const buildEventIngestService: ServiceImpl<typeof BuildEventIngest> = {
  ingestBuildToolEvents: (req, ctx) => ingest(ctx, req.requests),
};

export const publishBuildEventService: ServiceImpl<typeof PublishBuildEvent> = {
  // Lifecycle events (build enqueued, attempt started/finished, build finished) say nothing the
  // tool's own stream does not; they are checked and accepted.
  async publishLifecycleEvent(req, ctx) {
    await resultStoreScope(ctx, "write");
    const s = req.buildEvent?.streamId;
    if (!s?.buildId) throw invalidArgument("build_event.stream_id.build_id is required", "build_event.stream_id.build_id");
    if (!req.buildEvent?.event?.event.case) throw invalidArgument("build_event.event is required", "build_event.event");
    return {};
  },

  // connect-es answers a bidirectional call over HTTP/1.1 with 505 before it gets here; this says
  // what to do instead wherever a transport does reach it.
  async *publishBuildToolEventStream() {
    throw new ConnectError(
      "PublishBuildToolEventStream is bidirectional, which a Worker cannot serve: run `kiln bridge` next to the build (--bes_backend=grpc://…) or send a finished stream with `kiln upload-bep` (kiln.bes.v1.BuildEventIngest)",
      Code.Unimplemented,
    );
  },
};
