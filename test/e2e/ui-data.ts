// What the browser tests look at, put into a real stack through Kiln's public APIs: recorded BEP
// fixtures ingested as Bazel's tool stream (with the test log's bytes in the CAS); an action
// (Action, Command, a three-level input tree, a cached ActionResult with an output Tree) written
// with BatchUpdateBlobs and UpdateActionResult; invocations made with CreateInvocation.
import { create, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { sizeDelimitedDecodeStream } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { BuildEventSchema, type BuildEvent } from "../../src/bes/bep.ts";
import { streamFinishedRequest, toolEventRequest } from "../../src/bes/tool-stream.ts";
import {
  ActionCache,
  ActionSchema,
  CommandSchema,
  ContentAddressableStorage,
  DirectorySchema,
  TreeSchema,
  type Digest,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { StreamId_BuildComponent } from "../../src/gen/google/devtools/build/v1/build_events_pb.ts";
import type { PublishBuildToolEventStreamRequest } from "../../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { BuildEventIngest } from "../../src/gen/kiln/bes/v1/ingest_pb.ts";
import { ResultStoreUpload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";

export const INSTANCE = "main";
const FIXTURES = new URL("../fixtures/bep/", import.meta.url).pathname;

export function clients(baseUrl: string) {
  const transport = createConnectTransport({ baseUrl, httpVersion: "1.1" });
  return {
    cas: createClient(ContentAddressableStorage, transport),
    actionCache: createClient(ActionCache, transport),
    ingest: createClient(BuildEventIngest, transport),
    upload: createClient(ResultStoreUpload, transport),
  };
}
type Clients = ReturnType<typeof clients>;

const digestOf = (b: Uint8Array): Digest =>
  ({ hash: createHash("sha256").update(b).digest("hex"), sizeBytes: BigInt(b.length) }) as Digest;

/** Stores blobs in the CAS; their digests, in order. */
export async function putBlobs(c: Clients, blobs: Uint8Array[]): Promise<Digest[]> {
  const digests = blobs.map(digestOf);
  const res = await c.cas.batchUpdateBlobs({ instanceName: INSTANCE, requests: blobs.map((data, i) => ({ digest: digests[i], data })) });
  for (const r of res.responses) if (r.status?.code) throw new Error(`BatchUpdateBlobs: ${r.status.message}`);
  return digests;
}

export async function putMessage<D extends DescMessage>(c: Clients, schema: D, init: Parameters<typeof create<D>>[1]): Promise<Digest> {
  const [d] = await putBlobs(c, [toBinary(schema, create(schema, init) as MessageShape<D>)]);
  return d!;
}

async function readFixture(name: string): Promise<BuildEvent[]> {
  const events: BuildEvent[] = [];
  for await (const ev of sizeDelimitedDecodeStream(BuildEventSchema, createReadStream(`${FIXTURES}${name}.bep`))) events.push(ev);
  return events;
}

/**
 * A recorded build, ingested as a fresh invocation with `labels` (a BuildMetadata event, as
 * `--build_metadata=LABELS=…` makes) and each test.log replaced by `testLog` stored in the CAS
 * (the recording's own logs were in the recording stack's CAS). Returns the invocation id.
 */
export async function ingestFixture(c: Clients, name: string, opts: { labels: string[]; testLog?: string }): Promise<string> {
  const { id, requests } = await fixtureStream(c, name, opts);
  await ingest(c, requests);
  return id;
}

/** Sends tool stream requests as the bridge would, a batch at a time. */
export async function ingest(c: Clients, requests: PublishBuildToolEventStreamRequest[]) {
  for (let i = 0; i < requests.length; i += 100) await c.ingest.ingestBuildToolEvents({ requests: requests.slice(i, i + 100) });
}

/** ingestFixture's stream, not yet sent. */
export async function fixtureStream(c: Clients, name: string, opts: { labels: string[]; testLog?: string; id?: string }) {
  const events = await readFixture(name);
  const started = events[0]!;
  if (started.payload.case !== "started") throw new Error(`${name}.bep does not start with BuildStarted`);
  const id = opts.id ?? randomUUID();
  started.payload.value.uuid = id;
  const metadata = create(BuildEventSchema, {
    id: { id: { case: "buildMetadata", value: {} } },
    payload: { case: "buildMetadata", value: { metadata: { LABELS: opts.labels.join(",") } } },
  });
  events.splice(1, 0, metadata);
  if (opts.testLog !== undefined) {
    const [log] = await putBlobs(c, [new TextEncoder().encode(opts.testLog)]);
    for (const ev of events) {
      if (ev.payload.case !== "testResult") continue;
      for (const f of ev.payload.value.testActionOutput) {
        if (f.name === "test.log") f.file = { case: "uri", value: `bytestream://127.0.0.1/${INSTANCE}/blobs/${log!.hash}/${log!.sizeBytes}` };
      }
    }
  }
  const stream = { buildId: randomUUID(), invocationId: id, component: StreamId_BuildComponent.TOOL };
  const requests = events.map((ev, i) => toolEventRequest(stream, i + 1, ev));
  requests.push(streamFinishedRequest(stream, requests.length + 1));
  return { id, events, requests };
}

export interface SampleAction {
  action: Digest;
  inputRoot: Digest;
  src: Digest;
  stdout: string;
}

/** An action whose input root is run.sh + src/{main.c, lib/util.h}, with a cached result. */
export async function putSampleAction(c: Clients): Promise<SampleAction> {
  const enc = (s: string) => new TextEncoder().encode(s);
  const [runSh, mainC, utilH, out, stdoutBlob] = await putBlobs(c, [
    enc("#!/bin/sh\ncc src/main.c -o out/hello\n"),
    enc('#include "lib/util.h"\nint main(void) { return 0; }\n'),
    enc("#define UTIL 1\n"),
    enc("hello, output\n"),
    enc("\x1b[32mcompiled\x1b[0m src/main.c\n"),
  ]);
  const lib = await putMessage(c, DirectorySchema, { files: [{ name: "util.h", digest: utilH }] });
  const src = await putMessage(c, DirectorySchema, { directories: [{ name: "lib", digest: lib }], files: [{ name: "main.c", digest: mainC }] });
  const inputRoot = await putMessage(c, DirectorySchema, { directories: [{ name: "src", digest: src }], files: [{ name: "run.sh", digest: runSh, isExecutable: true }] });
  const platform = { properties: [{ name: "OSFamily", value: "linux" }] };
  const command = await putMessage(c, CommandSchema, {
    arguments: ["/bin/sh", "run.sh", "--verbose"],
    environmentVariables: [{ name: "PATH", value: "/usr/bin:/bin" }, { name: "LANG", value: "C.UTF-8" }],
    outputPaths: ["out/hello"],
    platform,
  });
  const action = await putMessage(c, ActionSchema, { commandDigest: command, inputRootDigest: inputRoot, platform });
  // An output directory as a Tree whose child directory is only in the Tree, not in the CAS.
  const [genTxt] = await putBlobs(c, [enc("generated\n")]);
  const gen = create(DirectorySchema, { files: [{ name: "gen.txt", digest: genTxt }] });
  const tree = await putMessage(c, TreeSchema, {
    root: { directories: [{ name: "gen", digest: digestOf(toBinary(DirectorySchema, gen)) }], files: [{ name: "hello", digest: out }] },
    children: [gen],
  });
  const t0 = Date.UTC(2026, 10, 29, 9, 0, 0);
  const at = (ms: number) => timestampFromMs(t0 + ms);
  await c.actionCache.updateActionResult({
    instanceName: INSTANCE,
    actionDigest: action,
    actionResult: {
      exitCode: 0,
      outputFiles: [{ path: "out/hello", digest: out, isExecutable: true }],
      outputDirectories: [{ path: "out/dir", treeDigest: tree }],
      stdoutDigest: stdoutBlob,
      executionMetadata: {
        worker: "ui-test-runner",
        queuedTimestamp: at(0),
        workerStartTimestamp: at(100),
        inputFetchStartTimestamp: at(100),
        inputFetchCompletedTimestamp: at(300),
        executionStartTimestamp: at(300),
        executionCompletedTimestamp: at(1300),
        outputUploadStartTimestamp: at(1300),
        outputUploadCompletedTimestamp: at(1400),
        workerCompletedTimestamp: at(1400),
      },
    },
  });
  return { action, inputRoot, src, stdout: "compiled src/main.c" };
}

/** `n` invocations labelled `label`, one a minute from `startMs` (made with CreateInvocation); their ids, oldest first. */
export async function putInvocations(c: Clients, label: string, n: number, startMs: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = randomUUID();
    await c.upload.createInvocation({
      invocationId: id,
      authorizationToken: randomUUID(),
      invocation: { timing: { startTime: timestampFromMs(startMs + i * 60_000) }, invocationAttributes: { labels: [label] } },
    });
    ids.push(id);
  }
  return ids;
}
