// The Build Event Service into ResultStore, on streams recorded from real Bazel 4.2.3 runs
// (test/fixtures/bep/): every event kind's mapping, replays, out-of-order and malformed events.
import { Code } from "@connectrpc/connect";
import { SELF, env } from "cloudflare:test";
import { clone, create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Aborted_AbortReason, BuildEventSchema, FileSchema, TestStatus } from "../../src/bes/bep.ts";
import { PublishBuildEvent } from "../../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { StreamId_BuildComponent } from "../../src/gen/google/devtools/build/v1/build_events_pb.ts";
import { Status, UploadStatus } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { ResultStoreUpload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { TargetType, TestSize } from "../../src/gen/google/devtools/resultstore/v2/target_pb.ts";
import { BuildEventIngest } from "../../src/gen/kiln/bes/v1/ingest_pb.ts";
import { corrupted, download, exportAll, fixtureEvents, toolStream, type Replay } from "./bes-helpers.ts";
import { connectClient, errorOf, grpcWebClient } from "./helpers.ts";

const ingest = grpcWebClient(BuildEventIngest);

/** Sends the stream's requests [from, to) in batches of `size`; the last committed sequence number. */
async function send(replay: Replay, from = 0, to = replay.requests.length, size = 10): Promise<bigint> {
  let committed = -1n;
  for (let i = from; i < to; i += size) {
    const res = await ingest.ingestBuildToolEvents({ requests: replay.requests.slice(i, Math.min(i + size, to)) });
    expect(res.invocation).toBe(`invocations/${replay.invocationId}`);
    committed = res.committedSequenceNumber;
  }
  return committed;
}

const byId = <T extends { id?: { targetId?: string } }>(xs: T[], targetId: string) => xs.filter((x) => x.id?.targetId === targetId);
const property = (props: { key: string; value: string }[], key: string) => props.find((p) => p.key === key)?.value;

describe("BES ingestion of a passing `bazel test //...` (test/bazel)", () => {
  it("makes the invocation with every target, configured target, test action and file set", async () => {
    const events = fixtureEvents("sample-test");
    const replay = toolStream(events);
    expect(await send(replay)).toBe(BigInt(replay.requests.length));
    const all = await exportAll(replay.invocationId);
    const inv = all.invocation;

    // BuildStarted, command lines, options, workspace status, BuildFinished.
    expect(inv.statusAttributes?.status).toBe(Status.PASSED);
    expect(inv.invocationAttributes?.exitCode).toBe(0);
    expect(inv.invocationAttributes?.users).toEqual(["root"]);
    expect(inv.workspaceInfo?.hostname).toBeTruthy();
    expect(inv.workspaceInfo?.workingDirectory).toMatch(/test\/bazel$/);
    expect(inv.workspaceInfo?.toolTag).toBe("bazel");
    expect(inv.timing?.startTime).toBeDefined();
    expect(inv.timing?.duration).toBeDefined();
    expect(inv.workspaceInfo?.commandLines.map((c) => c.label).sort()).toEqual(["canonical", "original"]);
    expect(inv.workspaceInfo?.commandLines.find((c) => c.label === "original")?.command).toBe("test");
    expect(property(inv.properties, "bazel.command")).toBe("test");
    // Debian's Bazel 4.2.3 reports no version ("no_version"), so there is no bazel.version here.
    expect(property(inv.properties, "bazel.workspace_directory")).toMatch(/test\/bazel$/);
    expect(property(inv.properties, "bazel.explicit_options")).toMatch(/--remote_cache=grpc:\/\//);
    expect(property(inv.properties, "workspace_status.BUILD_USER")).toBe("root");
    expect(property(inv.properties, "bazel.log.elapsed time")).toBeDefined();
    expect(inv.files.some((f) => f.uid === "command.profile.gz" && f.uri.startsWith("bytestream://"))).toBe(true);
    // The last event finalized it.
    const meta = await download.getInvocationDownloadMetadata({ name: `invocations/${replay.invocationId}/downloadMetadata` });
    expect(meta.uploadStatus).not.toBe(UploadStatus.UPLOADING);

    // Configuration.
    const configId = events.find((e) => e.payload.case === "configuration")!.id!.id.value as { id: string };
    expect(all.configurations.map((c) => c.id?.configurationId)).toContain(configId.id);
    const config = all.configurations.find((c) => c.id?.configurationId === configId.id)!;
    expect(config.configurationAttributes?.cpu).toBe("k8");
    expect(property(config.properties, "mnemonic")).toBe("k8-fastbuild");

    // TargetConfigured: one target per configured label; TargetComplete: their configured targets.
    const labels = events.filter((e) => e.payload.case === "configured").map((e) => (e.id!.id.value as { label: string }).label);
    expect(labels.length).toBeGreaterThan(10);
    expect(all.targets.map((t) => t.id?.targetId).sort()).toEqual([...labels].sort());
    expect(all.configuredTargets.map((t) => t.id?.targetId).sort()).toEqual([...labels].sort());
    const test = all.targets.find((t) => t.id?.targetId === "//:combined_test")!;
    expect(test.targetAttributes?.type).toBe(TargetType.TEST);
    expect(test.testAttributes?.size).toBe(TestSize.SMALL);
    expect(test.statusAttributes?.status).toBe(Status.PASSED);
    expect(byId(all.configuredTargets, "//:combined").map((c) => c.statusAttributes?.status)).toEqual([Status.BUILT]);

    // TestResult and TestSummary.
    for (const label of ["//:combined_test", "//:big_test", "//:tree_test"]) {
      const ct = byId(all.configuredTargets, label)[0]!;
      expect(ct.statusAttributes?.status, label).toBe(Status.PASSED);
      expect(ct.testAttributes?.totalRunCount).toBe(1);
      const tests = byId(all.actions, label).filter((a) => a.actionType.case === "testAction");
      expect(tests.map((a) => a.id?.actionId)).toEqual(["test_shard0_run0_attempt0"]);
      expect(tests[0]!.statusAttributes?.status).toBe(Status.PASSED);
      expect(tests[0]!.timing?.duration).toBeDefined();
      expect(tests[0]!.files.map((f) => f.uid).sort()).toEqual(["test.log", "test.xml"]);
      expect(tests[0]!.files[0]!.uri).toMatch(/^bytestream:\/\/[^/]+\/main\/blobs\/[0-9a-f]{64}\/\d+$/);
      expect(tests[0]!.files[0]!.length).toBeGreaterThan(0n);
    }

    // NamedSetOfFiles -> file sets, referenced by each target's "build" action.
    const namedSets = events.filter((e) => e.payload.case === "namedSetOfFiles").length;
    expect(all.fileSets.length).toBe(namedSets);
    const combined = byId(all.actions, "//:combined").find((a) => a.id?.actionId === "build")!;
    expect(combined.fileSets.length).toBeGreaterThan(0);
    const sets = new Map(all.fileSets.map((f) => [f.name, f]));
    expect(sets.get(combined.fileSets[0]!)?.files.map((f) => f.uid)).toContain("bazel-out/k8-fastbuild/bin/combined.txt");
    const traversed = await download.traverseFileSets({ name: combined.name });
    expect(traversed.fileSets.flatMap((f) => f.files.map((x) => x.uid))).toContain("bazel-out/k8-fastbuild/bin/combined.txt");
  });
});

describe("BES ingestion of failures", () => {
  it("a failing test is FAILED, with its attempt's test.log and the invocation FAILED (exit 3)", async () => {
    const replay = toolStream(fixtureEvents("failing-test"));
    await send(replay, 0, replay.requests.length, 7);
    const all = await exportAll(replay.invocationId);
    expect(all.invocation.statusAttributes?.status).toBe(Status.FAILED);
    expect(all.invocation.statusAttributes?.description).toBe("TESTS_FAILED");
    expect(all.invocation.invocationAttributes?.exitCode).toBe(3);
    const ct = byId(all.configuredTargets, "//:failing_test")[0]!;
    expect(ct.statusAttributes?.status).toBe(Status.FAILED);
    expect(all.targets.find((t) => t.id?.targetId === "//:failing_test")?.statusAttributes?.status).toBe(Status.FAILED);
    const attempt = byId(all.actions, "//:failing_test").find((a) => a.actionType.case === "testAction")!;
    expect(attempt.statusAttributes?.status).toBe(Status.FAILED);
    expect(attempt.files.find((f) => f.uid === "test.log")?.uri).toMatch(/^bytestream:\/\//);
  });

  it("a failed action (ActionExecuted) keeps its stdout, stderr, exit code and failure message", async () => {
    const replay = toolStream(fixtureEvents("failing-action"));
    await send(replay);
    const all = await exportAll(replay.invocationId);
    expect(all.invocation.statusAttributes?.status).toBe(Status.FAILED_TO_BUILD);
    expect(all.invocation.invocationAttributes?.exitCode).toBe(1);
    const failed = byId(all.actions, "//:broken").filter((a) => a.id?.actionId !== "build");
    expect(failed).toHaveLength(1);
    const a = failed[0]!;
    expect(a.statusAttributes?.status).toBe(Status.FAILED_TO_BUILD);
    expect(a.statusAttributes?.description).toMatch(/linux-sandbox failed|error executing/);
    expect(a.actionType.case === "buildAction" && a.actionType.value.type).toBe("Genrule");
    expect(a.actionType.case === "buildAction" && a.actionType.value.primaryOutputPath).toBe("bazel-out/k8-fastbuild/bin/broken.txt");
    expect(a.actionAttributes?.exitCode).toBeGreaterThan(0);
    expect(a.files.map((f) => f.uid).sort()).toEqual(["stderr", "stdout"]);
    expect(byId(all.configuredTargets, "//:broken")[0]!.statusAttributes?.status).toBe(Status.FAILED_TO_BUILD);
    expect(byId(all.configuredTargets, "//:fine")[0]!.statusAttributes?.status).toBe(Status.BUILT);
  });
});

describe("BES statuses the recordings lack (recorded events, edited)", () => {
  it("FLAKY and TIMEOUT summaries, a second attempt, and Aborted targets with their reason", async () => {
    const events = fixtureEvents("failing-test");
    const at = (kind: string) => events.findIndex((e) => e.payload.case === kind);
    const result = events[at("testResult")]!;
    const summary = events[at("testSummary")]!;
    const resultId = result.id!.id.value as { attempt: number; label: string; configuration?: { id: string } };
    // A second attempt that passed: the summary says FLAKY.
    const retry = clone(BuildEventSchema, result);
    (retry.id!.id.value as { attempt: number }).attempt = 2;
    if (retry.payload.case === "testResult") retry.payload.value.status = TestStatus.PASSED;
    if (summary.payload.case === "testSummary") summary.payload.value.overallStatus = TestStatus.FLAKY;
    // Another test that timed out, and targets aborted before they were built or configured.
    const timedOut = clone(BuildEventSchema, summary);
    (timedOut.id!.id.value as { label: string }).label = "//:slow_test";
    if (timedOut.payload.case === "testSummary") timedOut.payload.value.overallStatus = TestStatus.TIMEOUT;
    const skipped = create(BuildEventSchema, {
      id: { id: { case: "targetCompleted", value: { label: "//:skipped", configuration: resultId.configuration } } },
      payload: { case: "aborted", value: { reason: Aborted_AbortReason.SKIPPED, description: "skipped: a dependency failed" } },
    });
    const interrupted = create(BuildEventSchema, {
      id: { id: { case: "targetConfigured", value: { label: "//:never" } } },
      payload: { case: "aborted", value: { reason: Aborted_AbortReason.USER_INTERRUPTED } },
    });
    events.splice(at("testSummary"), 0, retry);
    events.splice(at("finished"), 0, timedOut, skipped, interrupted);
    const replay = toolStream(events);
    await send(replay);
    const all = await exportAll(replay.invocationId);
    const status = (label: string) => byId(all.configuredTargets, label)[0]?.statusAttributes;
    expect(status("//:failing_test")?.status).toBe(Status.FLAKY);
    expect(byId(all.actions, "//:failing_test").map((a) => [a.id?.actionId, a.statusAttributes?.status]).sort()).toEqual([
      ["build", Status.BUILT],
      ["test_shard0_run0_attempt0", Status.FAILED],
      ["test_shard0_run0_attempt1", Status.PASSED],
    ]);
    const attempt1 = byId(all.actions, "//:failing_test").find((a) => a.id?.actionId === "test_shard0_run0_attempt1")!;
    expect(attempt1.actionType.case === "testAction" && attempt1.actionType.value.attemptNumber).toBe(1);
    expect(status("//:slow_test")?.status).toBe(Status.TIMED_OUT);
    expect(status("//:skipped")).toEqual(expect.objectContaining({ status: Status.SKIPPED, description: "skipped: a dependency failed" }));
    const never = all.targets.find((t) => t.id?.targetId === "//:never")!;
    expect(never.statusAttributes).toEqual(expect.objectContaining({ status: Status.CANCELLED, description: "USER_INTERRUPTED" }));
  });

  it("an aspect's TargetComplete (--aspects) is the aspect's action; the target keeps its own status, outputs and test timeout", async () => {
    const events = fixtureEvents("sample-test");
    const own = events.find((e) => e.payload.case === "completed" && e.payload.value.success && e.payload.value.outputGroup.some((g) => g.fileSets.length))!;
    const label = (own.id!.id.value as { label: string }).label;
    const aspect = clone(BuildEventSchema, own);
    (aspect.id!.id.value as { aspect: string }).aspect = "//tools:lint.bzl%lint";
    if (aspect.payload.case === "completed") {
      aspect.payload.value.success = false;
      aspect.payload.value.testTimeoutSeconds = 0n;
      aspect.payload.value.testTimeout = undefined;
      const group = aspect.payload.value.outputGroup.find((g) => g.fileSets.length)!;
      group.name = "lint_report";
      group.fileSets = [group.fileSets[0]!];
      group.fileSets[0]!.id = "lint-report-set";
      aspect.payload.value.outputGroup = [group];
    }
    events.splice(events.indexOf(own) + 1, 0, aspect);
    const alone = toolStream(fixtureEvents("sample-test"));
    await send(alone);
    const expected = await exportAll(alone.invocationId);
    const replay = toolStream(events);
    await send(replay);
    const all = await exportAll(replay.invocationId);
    const ct = (x: typeof all) => byId(x.configuredTargets, label)[0]!;
    expect(ct(all).statusAttributes).toEqual(ct(expected).statusAttributes);
    expect(ct(all).testAttributes).toEqual(ct(expected).testAttributes);
    expect(all.targets.find((t) => t.id?.targetId === label)?.statusAttributes).toEqual(expected.targets.find((t) => t.id?.targetId === label)?.statusAttributes);
    const build = (x: typeof all) => byId(x.actions, label).find((a) => a.id?.actionId === "build")!;
    expect(build(all).fileSets.map((n) => n.split("/fileSets/")[1])).toEqual(build(expected).fileSets.map((n) => n.split("/fileSets/")[1]));
    const lint = byId(all.actions, label).find((a) => a.id?.actionId.startsWith("aspect_lint_"))!;
    expect(lint.statusAttributes?.status).toBe(Status.FAILED_TO_BUILD);
    expect(lint.fileSets.map((n) => decodeURIComponent(n.split("/fileSets/")[1]!))).toEqual(["named_set_lint-report-set"]);
  });

  it("times targets from TargetConfigured to TargetComplete by the stream's event times", async () => {
    const events = fixtureEvents("failing-action");
    const replay = toolStream(events, crypto.randomUUID(), Date.UTC(2026, 10, 29, 8, 0, 0));
    await send(replay);
    const all = await exportAll(replay.invocationId);
    const index = (kind: string, label: string) => events.findIndex((e) => e.payload.case === kind && (e.id!.id.value as { label?: string }).label === label);
    const seconds = index("completed", "//:fine") - index("configured", "//:fine");
    const ct = byId(all.configuredTargets, "//:fine")[0]!;
    expect(ct.timing?.startTime?.seconds).toBe(BigInt(Date.UTC(2026, 10, 29, 8, 0, 0) / 1000 + index("configured", "//:fine")));
    expect(ct.timing?.duration?.seconds).toBe(BigInt(seconds));
    expect(all.targets.find((t) => t.id?.targetId === "//:fine")?.timing?.duration?.seconds).toBe(BigInt(seconds));
  });

  it("stores a named set of 30,000 files (more than one resource holds) as parts, all reachable", async () => {
    const events = fixtureEvents("failing-test");
    const named = events.find((e) => e.payload.case === "namedSetOfFiles")!;
    if (named.payload.case !== "namedSetOfFiles") throw new Error("no named set");
    const template = named.payload.value.files[0]!;
    named.payload.value.files = Array.from({ length: 30_000 }, (_, i) => {
      const f = clone(FileSchema, template);
      f.name = `generated/out_${i}.txt`;
      return f;
    });
    const replay = toolStream(events);
    await send(replay, 0, replay.requests.length, 50);
    const all = await exportAll(replay.invocationId);
    const named0 = all.fileSets.find((f) => f.id?.fileSetId === "named_set_0")!;
    expect(named0.fileSets.some((n) => n.endsWith("/fileSets/named_set_0_part1"))).toBe(true);
    const build = byId(all.actions, "//:failing_test").find((a) => a.id?.actionId === "build")!;
    const uids = new Set<string>();
    let pageToken = "";
    do {
      const page = await download.traverseFileSets({ name: build.name, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
      for (const fs of page.fileSets) for (const f of fs.files) uids.add(f.uid);
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(uids.size).toBe(30_000);
    expect(uids.has("generated/out_29999.txt")).toBe(true);
  });

  it("is found by SearchInvocations once ingested", async () => {
    const replay = toolStream(fixtureEvents("failing-test"));
    await send(replay);
    const found = await download.searchInvocations({ query: `id.invocation_id = "${replay.invocationId}"` });
    expect(found.invocations.map((i) => i.id?.invocationId)).toEqual([replay.invocationId]);
  });
});

describe("BES exactly-once", () => {
  it("skips replayed events (a whole stream sent twice, overlapping batches) and applies each once", async () => {
    const replay = toolStream(fixtureEvents("sample-test"));
    const n = BigInt(replay.requests.length);
    expect(await send(replay, 0, 30, 10)).toBe(30n);
    // Bazel's retry after a broken stream resends from the first unacknowledged event; a bridge
    // that lost its acks resends more: both overlap what is committed.
    expect(await send(replay, 25, 45, 7)).toBe(45n);
    expect(await send(replay, 0, 45, 45)).toBe(45n);
    expect(await send(replay, 40)).toBe(n);
    const once = await exportAll(replay.invocationId);
    expect(await send(replay, 0, replay.requests.length, 50)).toBe(n);
    const twice = await exportAll(replay.invocationId);
    expect(twice).toEqual(once);
    expect(once.invocation.workspaceInfo?.commandLines).toHaveLength(2);
    const keys = once.invocation.properties.map((p) => p.key);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("refuses a gap in sequence numbers with FAILED_PRECONDITION and applies nothing of that batch", async () => {
    const replay = toolStream(fixtureEvents("failing-test"));
    expect(await send(replay, 0, 5)).toBe(5n);
    const gap = await errorOf(ingest.ingestBuildToolEvents({ requests: replay.requests.slice(6, 9) }));
    expect(gap.code).toBe(Code.FailedPrecondition);
    expect(gap.rawMessage).toMatch(/sequence_number 7 is out of order: the next one is 6/);
    // A batch whose later event is malformed: its earlier events are not applied either.
    const bad = await errorOf(ingest.ingestBuildToolEvents({ requests: [replay.requests[5]!, corrupted(replay.requests[6]!)] }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/sequence_number 7: bazel_event does not decode/);
    const before = await exportAll(replay.invocationId);
    expect(before.invocation.workspaceInfo?.commandLines ?? []).toHaveLength(0); // events 5-6 are command lines
    expect(await send(replay, 5)).toBe(BigInt(replay.requests.length));
    const after = await exportAll(replay.invocationId);
    expect(after.invocation.statusAttributes?.status).toBe(Status.FAILED);
  });

  it("refuses malformed streams and events clearly", async () => {
    const replay = toolStream(fixtureEvents("failing-test"));
    expect((await errorOf(ingest.ingestBuildToolEvents({ requests: [] }))).code).toBe(Code.InvalidArgument);
    const noStream = await errorOf(ingest.ingestBuildToolEvents({ requests: [{ orderedBuildEvent: { sequenceNumber: 1n } }] }));
    expect(noStream.code).toBe(Code.InvalidArgument);
    const mixed = toolStream(fixtureEvents("failing-test"));
    const twoStreams = await errorOf(ingest.ingestBuildToolEvents({ requests: [replay.requests[0]!, mixed.requests[1]!] }));
    expect(twoStreams.code).toBe(Code.InvalidArgument);
    expect(twoStreams.rawMessage).toMatch(/another stream/);
    const zero = toolStream(fixtureEvents("failing-test"));
    zero.requests[0]!.orderedBuildEvent!.sequenceNumber = 0n;
    expect((await errorOf(ingest.ingestBuildToolEvents({ requests: zero.requests.slice(0, 1) }))).rawMessage).toMatch(/sequence_number 0 is not positive/);
    const notUuid = toolStream(fixtureEvents("failing-test", "not-a-uuid"));
    expect((await errorOf(ingest.ingestBuildToolEvents({ requests: notUuid.requests.slice(0, 1) }))).code).toBe(Code.InvalidArgument);
    // BuildStarted for another invocation than the stream's.
    const other = toolStream(fixtureEvents("failing-test"));
    other.requests[0]!.orderedBuildEvent!.streamId!.invocationId = crypto.randomUUID();
    const wrongStart = await errorOf(ingest.ingestBuildToolEvents({ requests: other.requests.slice(0, 1) }));
    expect(wrongStart.code).toBe(Code.InvalidArgument);
    expect(wrongStart.rawMessage).toMatch(/BuildStarted.uuid/);
  });

  it("keeps an invocation to the stream that made it", async () => {
    const events = fixtureEvents("failing-test");
    const first = toolStream(events);
    await send(first, 0, 3);
    const second = toolStream(events, crypto.randomUUID());
    const e = await errorOf(ingest.ingestBuildToolEvents({ requests: second.requests.slice(0, 3) }));
    expect(e.code).toBe(Code.FailedPrecondition);
    expect(e.rawMessage).toMatch(/another build event stream/);
    // Another uploader's UploadBatch (the resume token is readable) ends the stream's writes.
    const upload = connectClient(ResultStoreUpload);
    const meta = await connectClient(ResultStoreUpload, { "x-goog-fieldmask": "resume_token" }).getInvocationUploadMetadata({ name: `invocations/${first.invocationId}/uploadMetadata` });
    await upload.uploadBatch({ parent: `invocations/${first.invocationId}`, resumeToken: meta.resumeToken, nextResumeToken: "b3RoZXI", uploadRequests: [] });
    const after = await errorOf(ingest.ingestBuildToolEvents({ requests: first.requests.slice(3, 5) }));
    expect(after.code).toBe(Code.FailedPrecondition);
    expect(after.rawMessage).toMatch(/another uploader/);
    // An invocation made through ResultStoreUpload is not a stream's.
    const id = crypto.randomUUID();
    await connectClient(ResultStoreUpload).createInvocation({ invocationId: id, invocation: {} });
    const taken = toolStream(fixtureEvents("failing-test", id));
    expect((await errorOf(ingest.ingestBuildToolEvents({ requests: taken.requests.slice(0, 1) }))).code).toBe(Code.AlreadyExists);
  });
});

describe("google.devtools.build.v1.PublishBuildEvent on the worker", () => {
  const publish = grpcWebClient(PublishBuildEvent);

  it("accepts lifecycle events and refuses ones without a stream", async () => {
    const streamId = { buildId: crypto.randomUUID(), invocationId: crypto.randomUUID(), component: StreamId_BuildComponent.CONTROLLER };
    await publish.publishLifecycleEvent({ buildEvent: { streamId, sequenceNumber: 1n, event: { event: { case: "buildEnqueued", value: {} } } }, projectId: "p" });
    expect((await errorOf(publish.publishLifecycleEvent({}))).code).toBe(Code.InvalidArgument);
  });

  it("cannot hold PublishBuildToolEventStream (bidirectional) itself: the call fails, nothing is stored", async () => {
    const replay = toolStream(fixtureEvents("failing-test"));
    async function* requests() {
      yield* replay.requests;
    }
    await errorOf(
      (async () => {
        for await (const _ of publish.publishBuildToolEventStream(requests()));
      })(),
    );
    expect((await errorOf(download.getInvocation({ name: `invocations/${replay.invocationId}` }))).code).toBe(Code.NotFound);
  });

  it("takes Connect JSON for BuildEventIngest too (the BEP Any is resolved)", async () => {
    const replay = toolStream(fixtureEvents("failing-test"));
    const json = connectClient(BuildEventIngest);
    const res = await json.ingestBuildToolEvents({ requests: replay.requests.slice(0, 3) }).catch((e: unknown) => e);
    // The client needs the registry to encode the Any; what matters is the server's answer to JSON.
    void res;
    const body = {
      requests: [
        {
          orderedBuildEvent: {
            streamId: { buildId: replay.buildId, invocationId: replay.invocationId, component: "TOOL" },
            sequenceNumber: "1",
            event: { componentStreamFinished: { type: "FINISHED" } },
          },
        },
      ],
    };
    const r = await SELF.fetch("http://kiln/kiln.bes.v1.BuildEventIngest/IngestBuildToolEvents", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { committedSequenceNumber: string }).committedSequenceNumber).toBe("1");
  });
});

describe("BES with API keys", () => {
  beforeAll(() => {
    env.API_KEYS = JSON.stringify([
      { key: "bes-writer-0123456789-0123456789abcdef", instances: [""], access: "read-write", name: "ci" },
      { key: "bes-reader-0123456789-0123456789abcdef", instances: [""], access: "read", name: "reader" },
    ]);
  });
  afterAll(() => {
    delete env.API_KEYS;
  });

  it("needs a key that may write", async () => {
    const replay = toolStream(fixtureEvents("failing-test"));
    const requests = replay.requests.slice(0, 3);
    expect((await errorOf(ingest.ingestBuildToolEvents({ requests }))).code).toBe(Code.Unauthenticated);
    const reader = grpcWebClient(BuildEventIngest, { authorization: "Bearer bes-reader-0123456789-0123456789abcdef" });
    expect((await errorOf(reader.ingestBuildToolEvents({ requests }))).code).toBe(Code.PermissionDenied);
    const writer = grpcWebClient(BuildEventIngest, { authorization: "Bearer bes-writer-0123456789-0123456789abcdef" });
    expect((await writer.ingestBuildToolEvents({ requests })).committedSequenceNumber).toBe(3n);
    const lifecycle = { buildEvent: { streamId: { buildId: replay.buildId }, event: { event: { case: "buildEnqueued" as const, value: {} } } } };
    expect((await errorOf(grpcWebClient(PublishBuildEvent).publishLifecycleEvent(lifecycle))).code).toBe(Code.Unauthenticated);
  });
});
