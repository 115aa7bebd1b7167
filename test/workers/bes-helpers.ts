// The recorded BEP streams (test/fixtures/bep/, real Bazel 4.2.3 runs) as tool event stream
// requests, and the ResultStore invocation they produce, read back whole.
import { clone, fromBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { inject } from "vitest";
import { BuildEventSchema, type BuildEvent } from "../../src/bes/bep.ts";
import { streamFinishedRequest, toolEventRequest } from "../../src/bes/tool-stream.ts";
import { StreamId_BuildComponent } from "../../src/gen/google/devtools/build/v1/build_events_pb.ts";
import { PublishBuildToolEventStreamRequestSchema, type PublishBuildToolEventStreamRequest } from "../../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { connectClient } from "./helpers.ts";

export type Fixture = "sample-test" | "failing-test" | "failing-action";

/** A fixture's BEP events, with the build's uuid replaced by a fresh one (each replay its own invocation). */
export function fixtureEvents(name: Fixture, invocationId = crypto.randomUUID()): BuildEvent[] {
  const b64 = inject("bepFixtures")[name];
  if (!b64) throw new Error(`no fixture ${name}.bep`);
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const r = new BinaryReader(bytes);
  const events: BuildEvent[] = [];
  while (r.pos < bytes.length) events.push(fromBinary(BuildEventSchema, r.bytes()));
  const started = events[0]!;
  if (started.payload.case !== "started") throw new Error(`${name}.bep does not start with BuildStarted`);
  started.payload.value.uuid = invocationId;
  return events;
}

export interface Replay {
  invocationId: string;
  buildId: string;
  requests: PublishBuildToolEventStreamRequest[];
}

/**
 * The stream Bazel would send for `events`: sequence numbers 1..N, then component_stream_finished.
 * With `startMs`, event i was sent at startMs + i seconds (as a live stream's event_time).
 */
export function toolStream(events: BuildEvent[], buildId = crypto.randomUUID(), startMs?: number): Replay {
  const started = events[0]!.payload.value as { uuid: string };
  const streamId = { buildId, invocationId: started.uuid, component: StreamId_BuildComponent.TOOL };
  const requests = events.map((ev, i) => toolEventRequest(streamId, i + 1, ev, startMs === undefined ? undefined : timestampFromMs(startMs + i * 1000)));
  requests.push(streamFinishedRequest(streamId, requests.length + 1));
  return { invocationId: started.uuid, buildId, requests };
}

export const download = connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*" });

type Export = Awaited<ReturnType<typeof download.exportInvocation>>;

/** Everything ExportInvocation gives, across its pages. */
export async function exportAll(invocationId: string) {
  const name = `invocations/${invocationId}`;
  const all: Pick<Export, "targets" | "configurations" | "configuredTargets" | "actions" | "fileSets"> = {
    targets: [],
    configurations: [],
    configuredTargets: [],
    actions: [],
    fileSets: [],
  };
  let invocation: Export["invocation"];
  let pageToken = "";
  do {
    const r = await download.exportInvocation({ name, pageSize: 1000, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
    invocation ??= r.invocation;
    all.targets.push(...r.targets);
    all.configurations.push(...r.configurations);
    all.configuredTargets.push(...r.configuredTargets);
    all.actions.push(...r.actions);
    all.fileSets.push(...r.fileSets);
    pageToken = r.nextPageToken;
  } while (pageToken);
  return { invocation: invocation!, ...all };
}

/** A copy of a request whose bazel_event holds bytes that do not decode as a BuildEvent. */
export function corrupted(r: PublishBuildToolEventStreamRequest): PublishBuildToolEventStreamRequest {
  const copy = clone(PublishBuildToolEventStreamRequestSchema, r);
  const event = copy.orderedBuildEvent!.event!.event;
  if (event.case !== "bazelEvent") throw new Error("not a bazel_event");
  event.value.value = new Uint8Array([0x0a, 0xff, 0xff, 0xff]);
  return copy;
}
