// The Build Event Service end to end: real Bazel 4.2.3 with --bes_backend through the bridge and
// the remote cache on, read back through ResultStoreDownload and ResultStoreFileDownload; a tool
// event stream broken midway and resent from the first unacknowledged event (as Bazel does) by a
// grpc-js client; and `kiln upload-bep` of a recorded --build_event_binary_file.
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBridge } from "../../cli/bridge.ts";
import { uploadBep } from "../../cli/upload-bep.ts";
import { BuildEventSchema } from "../../src/bes/bep.ts";
import { streamFinishedRequest, toolEventRequest } from "../../src/bes/tool-stream.ts";
import { PublishBuildToolEventStreamRequestSchema } from "../../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { StreamId_BuildComponent } from "../../src/gen/google/devtools/build/v1/build_events_pb.ts";
import { Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { ResultStoreFileDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_file_download_pb.ts";
import { RemoteActions } from "../../src/gen/kiln/invocation/v1/remote_actions_pb.ts";
import { WORKSPACE_DIR, bazelAvailable, disposeOutputBase, runBazel } from "./bazel.ts";
import { requireTool, startStack, type Stack } from "./stack.ts";

const haveBazel = requireTool("bazel", bazelAvailable);
const FAILING_DIR = fileURLToPath(new URL("../bazel-failing/", import.meta.url));
const FIXTURES = fileURLToPath(new URL("../fixtures/bep/", import.meta.url));

let stack: Stack;
let download: Client<typeof ResultStoreDownload>;
let files: Client<typeof ResultStoreFileDownload>;
let remote: Client<typeof RemoteActions>;
let tmp: string;

beforeAll(async () => {
  stack = await startStack();
  const transport = createConnectTransport({ baseUrl: stack.httpUrl, httpVersion: "1.1", interceptors: [(next) => (req) => (req.header.set("x-goog-fieldmask", "*"), next(req))] });
  download = createClient(ResultStoreDownload, transport);
  files = createClient(ResultStoreFileDownload, transport);
  remote = createClient(RemoteActions, transport);
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

/**
 * `bazel test //...` in `dir`, streaming build events to a bridge (the stack's unless `besTarget`),
 * `salt` making every action miss the cache; `during` runs while Bazel does.
 */
async function bazelTestWithBes(dir: string, opts: { besTarget?: string; salt?: string; during?: (invocationId: string) => Promise<void> } = {}) {
  const invocationId = randomUUID();
  const outputBase = join(tmp, `ob-${invocationId}`);
  try {
    const running = runBazel(
      dir,
      [
        "test",
        `--remote_cache=grpc://${stack.grpcTarget}`,
        "--remote_instance_name=main",
        `--bes_backend=grpc://${opts.besTarget ?? stack.grpcTarget}`,
        `--bes_results_url=${stack.httpUrl}/invocations/`,
        `--invocation_id=${invocationId}`,
        ...(opts.salt ? [`--action_env=SALT=${opts.salt}`] : []),
        "//...",
      ],
      { outputBase, timeoutMs: 5 * 60_000 },
    );
    await opts.during?.(invocationId);
    return { invocationId, ...(await running) };
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
    // Bazel's remote cache calls carried its invocation id (RequestMetadata) through the bridge:
    // every action it looked up is linked to the invocation, and the cold cache took its uploads.
    const linked = await remote.listRemoteActions({ name: `invocations/${run.invocationId}`, pageSize: 1000 });
    expect(linked.totalActions).toBeGreaterThan(0n);
    expect(linked.totalCacheHits + linked.totalCacheMisses).toBeGreaterThanOrEqual(linked.totalActions);
    expect(linked.totalCacheWrites).toBeGreaterThan(0n);
    expect(linked.remoteActions.map((a) => a.actionDigest?.hash)).toEqual(expect.arrayContaining([expect.stringMatching(/^[0-9a-f]{64}$/)]));
  }, 6 * 60_000);

  it("a stream broken midway (the bridge restarted) is retried by Bazel: the invocation is complete, nothing doubled", async () => {
    const firstLog: string[] = [];
    let bridge = await startBridge({ upstream: stack.httpUrl, port: 0, log: (line) => firstLog.push(line) });
    const port = bridge.port;
    let restarted = false;
    const run = await bazelTestWithBes(WORKSPACE_DIR, {
      besTarget: `127.0.0.1:${port}`,
      salt: randomUUID(),
      // Once the invocation exists (Bazel's first events are committed), the bridge goes away
      // with the stream open, and a new one comes up on the same port.
      async during(invocationId) {
        for (let i = 0; i < 600 && !restarted; i++) {
          const exists = await download.getInvocation({ name: `invocations/${invocationId}` }).then(() => true, () => false);
          if (exists) {
            await bridge.close();
            bridge = await startBridge({ upstream: stack.httpUrl, port, log: () => {} });
            restarted = true;
          } else await new Promise((r) => setTimeout(r, 100));
        }
      },
    });
    await bridge.close();
    expect(restarted).toBe(true);
    // The first bridge went away in the middle of Bazel's stream.
    expect(firstLog.join("\n")).toMatch(/PublishBuildToolEventStream failed/);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/Build Event Protocol upload failed|BES upload failed/i);
    const all = await exportAll(run.invocationId);
    expect(all.invocation?.statusAttributes?.status).toBe(Status.PASSED);
    expect(all.invocation?.workspaceInfo?.commandLines).toHaveLength(2);
    const keys = all.invocation!.properties.map((p) => p.key);
    expect(new Set(keys).size).toBe(keys.length);
    for (const label of ["//:seed", "//:combined", "//:big", "//:combined_test", "//:big_test", "//:tree_test"]) expect(all.targets.map((t) => t.id?.targetId)).toContain(label);
    expect(all.actions.filter((a) => a.actionType.case === "testAction")).toHaveLength(4);
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
    // Bazel's test.xml (it writes one for a test that wrote none) is parsed into the TestSuite.
    const suite = attempt?.actionType.case === "testAction" ? attempt.actionType.value.testSuite : undefined;
    const testCase = suite?.tests[0]?.testType;
    expect(testCase?.case).toBe("testCase");
    expect(testCase?.case === "testCase" && testCase.value.errors[0]?.errorMessage).toMatch(/exited with error code 1/);
    expect(await readFileUri(log!.uri)).toContain("kiln-failing-test: this test fails on purpose");
    // The same file over native gRPC, through the bridge.
    const grpcFiles = createClient(ResultStoreFileDownload, createGrpcTransport({ baseUrl: `http://${stack.grpcTarget}` }));
    const parts: Uint8Array[] = [];
    for await (const r of grpcFiles.getFile({ uri: log!.uri })) parts.push(r.data);
    expect(Buffer.concat(parts).toString("utf8")).toContain("kiln-failing-test: this test fails on purpose");
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

/** The byte offset after the first `n` size-delimited events of a BEP file. */
function afterEvents(file: Uint8Array, n: number): number {
  let at = 0;
  for (let i = 0; i < n; i++) {
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const b = file[at++]!;
      len += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    at += len;
  }
  return at;
}

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

  it("a file cut short (the build was killed) uploads the events before the cut; the whole file later completes it", async () => {
    const whole = await readFile(join(FIXTURES, "failing-test.bep"));
    const cut = join(tmp, "cut.bep");
    await writeFile(cut, whole.subarray(0, Math.floor(whole.length / 2)));
    const e = await uploadBep(cut, { upstream: stack.httpUrl }).then(() => null, (err: Error) => err);
    expect(e?.message).toMatch(/ends inside event \d+ .*: the \d+ events before it were uploaded to invocations\//);
    const id = /invocations\/([0-9a-f-]+)/.exec(e!.message)![1]!;
    const partial = await exportAll(id);
    expect(partial.invocation?.statusAttributes?.status).not.toBe(Status.FAILED);
    const full = await uploadBep(join(FIXTURES, "failing-test.bep"), { upstream: stack.httpUrl });
    expect(full.invocationId).toBe(id);
    const all = await exportAll(id);
    expect(all.invocation?.statusAttributes?.status).toBe(Status.FAILED);
    expect(all.invocation?.workspaceInfo?.commandLines).toHaveLength(2);
    // Cut between two events (Bazel writes each whole, so a killed build's file ends so): the events
    // are uploaded and the invocation stays open, for the whole file to complete.
    // A build of its own: the fixture's invocation id (36 characters, in place) replaced by a new one.
    const recorded = (await readFile(join(FIXTURES, "failing-action.bep"))).toString("latin1");
    const recordedId = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.exec(recorded)![0];
    const events = Buffer.from(recorded.replaceAll(recordedId, randomUUID()), "latin1");
    const boundary = join(tmp, "boundary.bep");
    await writeFile(boundary, events.subarray(0, afterEvents(events, 10)));
    const open = await uploadBep(boundary, { upstream: stack.httpUrl }).then(() => null, (err: Error) => err);
    expect(open?.message).toMatch(/ends after event 10, before Bazel's last event .* invocations\/[0-9a-f-]+, which stays open/);
    const openId = /invocations\/([0-9a-f-]+)/.exec(open!.message)![1]!;
    expect((await exportAll(openId)).invocation?.statusAttributes?.status).not.toBe(Status.FAILED_TO_BUILD);
    const rest = join(tmp, "whole.bep");
    await writeFile(rest, events);
    await uploadBep(rest, { upstream: stack.httpUrl });
    expect((await exportAll(openId)).invocation?.statusAttributes?.status).toBe(Status.FAILED_TO_BUILD);
    const text = join(tmp, "not-bep.txt");
    await writeFile(text, "this is a text file, not build events\n");
    await expect(uploadBep(text, { upstream: stack.httpUrl })).rejects.toThrow(/is not a --build_event_binary_file/);
  }, 60_000);
});

describe("the bridge against a worker with API keys", () => {
  const KEY = "kiln-bes-key-0123456789-0123456789abcdef";
  let keyed: Stack;
  beforeAll(async () => {
    keyed = await startStack({ vars: { API_KEYS: JSON.stringify([{ key: KEY, instances: [""], access: "read-write" }]) } });
  }, 120_000);
  afterAll(async () => {
    await keyed?.stop();
  });

  /** Sends a whole recorded stream through a bridge without any header, as Bazel 4.2.3 does; the acks or the error. */
  async function streamThrough(target: string): Promise<{ acks: number; error?: grpc.ServiceError }> {
    const invocationId = randomUUID();
    const events = await fixtureEvents("failing-test", invocationId);
    const streamId = { buildId: randomUUID(), invocationId, component: StreamId_BuildComponent.TOOL };
    const requests = [...events.map((ev, i) => toolEventRequest(streamId, i + 1, ev)), streamFinishedRequest(streamId, events.length + 1)];
    const client = rawClient(target);
    try {
      const call = client.stream();
      let acks = 0;
      const done = new Promise<{ acks: number; error?: grpc.ServiceError }>((resolve) => {
        call.on("data", () => acks++);
        call.on("end", () => resolve({ acks }));
        call.on("error", (error: grpc.ServiceError) => resolve({ acks, error }));
      });
      for (const r of requests) call.write(toBinary(PublishBuildToolEventStreamRequestSchema, r));
      call.end();
      return await done;
    } finally {
      client.close();
    }
  }
  it("adds KILN_API_KEY to build events that carry no key; without it they are UNAUTHENTICATED", async () => {
    const plain = await streamThrough(keyed.grpcTarget);
    expect(plain.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    const bridge = await startBridge({ upstream: keyed.httpUrl, port: 0, besApiKey: KEY, log: () => {} });
    try {
      const withKey = await streamThrough(`127.0.0.1:${bridge.port}`);
      expect(withKey.error).toBeUndefined();
      expect(withKey.acks).toBeGreaterThan(20);
    } finally {
      await bridge.close();
    }
  }, 120_000);
});
