// The Build Event Service end to end: real Bazel 4.2.3 with --bes_backend through the bridge and
// the remote cache on, read back through ResultStoreDownload and ResultStoreFileDownload; a tool
// event stream broken midway and resent from the first unacknowledged event (as Bazel does) by a
// grpc-js client; and `kiln upload-bep` of a recorded --build_event_binary_file.
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { uploadBep } from "../../cli/upload-bep.ts";
import { BuildEventSchema } from "../../src/bes/bep.ts";
import { streamFinishedRequest, toolEventRequest } from "../../src/bes/tool-stream.ts";
import { PublishBuildToolEventStreamRequestSchema } from "../../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { StreamId_BuildComponent } from "../../src/gen/google/devtools/build/v1/build_events_pb.ts";
import { Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { ResultStoreFileDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_file_download_pb.ts";
import { WORKSPACE_DIR, bazelAvailable, disposeOutputBase, runBazel } from "./bazel.ts";
import { requireTool, startStack, type Stack } from "./stack.ts";

const haveBazel = requireTool("bazel", bazelAvailable);
const FAILING_DIR = fileURLToPath(new URL("../bazel-failing/", import.meta.url));
const FIXTURES = fileURLToPath(new URL("../fixtures/bep/", import.meta.url));

let stack: Stack;
let download: Client<typeof ResultStoreDownload>;
let files: Client<typeof ResultStoreFileDownload>;
let tmp: string;

beforeAll(async () => {
  stack = await startStack();
  const transport = createConnectTransport({ baseUrl: stack.httpUrl, httpVersion: "1.1", interceptors: [(next) => (req) => (req.header.set("x-goog-fieldmask", "*"), next(req))] });
  download = createClient(ResultStoreDownload, transport);
  files = createClient(ResultStoreFileDownload, transport);
  tmp = await mkdtemp(join(tmpdir(), "kiln-bes-"));
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function exportAll(invocationId: string) {
  const r = await download.exportInvocation({ name: `invocations/${invocationId}`, pageSize: 1000 });
  expect(r.nextPageToken).toBe("");
  return r;
}

async function readFileUri(uri: string): Promise<string> {
  const parts: Uint8Array[] = [];
  for await (const r of files.getFile({ uri })) parts.push(r.data);
  return Buffer.concat(parts).toString("utf8");
}

/** `bazel test //...` in `dir`, streaming build events to the bridge; its invocation id and result. */
async function bazelTestWithBes(dir: string) {
  const invocationId = randomUUID();
  const outputBase = join(tmp, `ob-${invocationId}`);
  try {
    const run = await runBazel(
      dir,
      [
        "test",
        `--remote_cache=grpc://${stack.grpcTarget}`,
        "--remote_instance_name=main",
        `--bes_backend=grpc://${stack.grpcTarget}`,
        `--bes_results_url=${stack.httpUrl}/invocations/`,
        `--invocation_id=${invocationId}`,
        "//...",
      ],
      { outputBase, timeoutMs: 5 * 60_000 },
    );
    return { invocationId, ...run };
  } finally {
    await disposeOutputBase(dir, outputBase);
  }
}

describe.skipIf(!haveBazel)("Bazel --bes_backend through the bridge", () => {
  it("a passing `bazel test //...` appears with every target, PASSED", async () => {
    const run = await bazelTestWithBes(WORKSPACE_DIR);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain(`Streaming build results to: ${stack.httpUrl}/invocations/${run.invocationId}`);
    expect(run.stderr).not.toMatch(/Build Event Protocol upload failed|BES upload failed/i);
    const all = await exportAll(run.invocationId);
    expect(all.invocation?.statusAttributes?.status).toBe(Status.PASSED);
    const targets = all.targets.map((t) => t.id?.targetId);
    for (const label of ["//:seed", "//:combined", "//:big", "//:tree", "//:multi", "//:combined_test", "//:big_test", "//:tree_test"]) expect(targets).toContain(label);
    expect(all.configuredTargets.length).toBe(all.targets.length);
    for (const ct of all.configuredTargets) expect([Status.BUILT, Status.PASSED], ct.id?.targetId).toContain(ct.statusAttributes?.status);
  }, 6 * 60_000);

  it("a failing test is FAILED and its test.log is readable through GetFile", async () => {
    const run = await bazelTestWithBes(FAILING_DIR);
    expect(run.code, run.stderr).toBe(3);
    expect(run.stderr).not.toMatch(/Build Event Protocol upload failed|BES upload failed/i);
    const all = await exportAll(run.invocationId);
    expect(all.invocation?.statusAttributes?.status).toBe(Status.FAILED);
    const ct = all.configuredTargets.find((c) => c.id?.targetId === "//:failing_test");
    expect(ct?.statusAttributes?.status).toBe(Status.FAILED);
    const attempt = all.actions.find((a) => a.id?.targetId === "//:failing_test" && a.actionType.case === "testAction");
    const log = attempt?.files.find((f) => f.uid === "test.log");
    expect(log?.uri).toMatch(/^bytestream:\/\//);
    expect(await readFileUri(log!.uri)).toContain("kiln-failing-test: this test fails on purpose");
    const tail = await files.getFileTail({ uri: log!.uri, readLimit: 4096n });
    expect(Buffer.from(tail.data).toString("utf8")).toContain("kiln-failing-test");
  }, 6 * 60_000);
});

// ---- a grpc-js client of PublishBuildEvent, as Bazel's (grpc-java) would use it ----

/** Raw PublishBuildToolEventStreamRequest bytes: the grpc-js client sends them as they are. */
function rawClient(target: string) {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  return {
    stream: () =>
      client.makeBidiStreamRequest<Uint8Array, Buffer>(
        "/google.devtools.build.v1.PublishBuildEvent/PublishBuildToolEventStream",
        (b) => Buffer.from(b),
        (b) => b,
      ),
    close: () => client.close(),
  };
}

function fixtureEvents(name: string, invocationId: string) {
  return readFile(join(FIXTURES, `${name}.bep`)).then((bytes) => {
    const r = new BinaryReader(bytes);
    const events = [];
    while (r.pos < bytes.length) events.push(fromBinary(BuildEventSchema, r.bytes()));
    const started = events[0]!.payload;
    if (started.case === "started") started.value.uuid = invocationId;
    return events;
  });
}

describe("PublishBuildToolEventStream through the bridge (grpc-js)", () => {
  it("acknowledges in order; a stream broken midway is resent from the first unacknowledged event, nothing doubled", async () => {
    const invocationId = randomUUID();
    const events = await fixtureEvents("sample-test", invocationId);
    const streamId = { buildId: randomUUID(), invocationId, component: StreamId_BuildComponent.TOOL };
    const requests = [...events.map((ev, i) => toolEventRequest(streamId, i + 1, ev)), streamFinishedRequest(streamId, events.length + 1)];
    const bytes = requests.map((r) => toBinary(PublishBuildToolEventStreamRequestSchema, r));
    const acksOf = (buf: Buffer) => {
      // PublishBuildToolEventStreamResponse: field 2 is sequence_number.
      const r = new BinaryReader(buf);
      let seq = 0;
      while (r.pos < buf.length) {
        const [field, wire] = r.tag();
        if (field === 2) seq = Number(r.int64());
        else r.skip(wire);
      }
      return seq;
    };
    const client = rawClient(stack.grpcTarget);
    try {
      // First stream: all events up to 30 acknowledged, then 31..45 sent and the stream cancelled
      // (the connection breaks) before their acks are read.
      const first = client.stream();
      const acked: number[] = [];
      const gotAcks = new Promise<void>((resolve) => first.on("data", (b: Buffer) => (acked.push(acksOf(b)), acked.length === 30 && resolve())));
      first.on("error", () => {});
      for (const b of bytes.slice(0, 30)) first.write(b);
      await gotAcks;
      expect(acked).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      for (const b of bytes.slice(30, 45)) first.write(b);
      first.cancel();
      // Second stream: like Bazel, resend everything not acknowledged (31 on), to the end.
      const second = client.stream();
      const acked2: number[] = [];
      const done = new Promise<void>((resolve, reject) => {
        second.on("data", (b: Buffer) => acked2.push(acksOf(b)));
        second.on("end", resolve);
        second.on("error", reject);
      });
      for (const b of bytes.slice(30)) second.write(b);
      second.end();
      await done;
      expect(acked2).toEqual(Array.from({ length: bytes.length - 30 }, (_, i) => i + 31));
    } finally {
      client.close();
    }
    const all = await exportAll(invocationId);
    expect(all.invocation?.statusAttributes?.status).toBe(Status.PASSED);
    expect(all.invocation?.workspaceInfo?.commandLines).toHaveLength(2);
    const labels = events.filter((e) => e.payload.case === "configured").map((e) => (e.id!.id.value as { label: string }).label);
    expect(all.targets.map((t) => t.id?.targetId).sort()).toEqual([...labels].sort());
    const testActions = all.actions.filter((a) => a.actionType.case === "testAction");
    expect(testActions).toHaveLength(3);
  }, 120_000);
});

describe("kiln upload-bep", () => {
  it("uploads a --build_event_binary_file; uploading it again changes nothing", async () => {
    const file = join(FIXTURES, "failing-action.bep");
    const first = await uploadBep(file, { upstream: stack.httpUrl });
    expect(first.events).toBeGreaterThan(20);
    const once = await exportAll(first.invocationId);
    expect(once.invocation?.statusAttributes?.status).toBe(Status.FAILED_TO_BUILD);
    expect(once.actions.some((a) => a.id?.targetId === "//:broken" && a.files.some((f) => f.uid === "stderr"))).toBe(true);
    const again = await uploadBep(file, { upstream: stack.httpUrl });
    expect(again.invocationId).toBe(first.invocationId);
    expect(await exportAll(first.invocationId)).toEqual(once);
  }, 60_000);
});
