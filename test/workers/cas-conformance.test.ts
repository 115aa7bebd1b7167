// REAPI conformance of the CAS read paths: GetTree paging and resumption, and digests of size 0
// whose hash is not the empty blob's.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Capabilities, ContentAddressableStorage, DirectorySchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { BadRequestSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { checkOutputNodeProperties, SUPPORTED_NODE_PROPERTIES } from "../../src/services/node-properties.ts";
import { EMPTY_SHA256 } from "../../src/storage/digest.ts";
import { codeOf, connectClient, digestOf, grpcWebClient } from "./helpers.ts";

const cas = connectClient(ContentAddressableStorage);
const bs = grpcWebClient(ByteStream);

type Digest = { hash: string; sizeBytes: bigint };

async function putDir(dir: Parameters<typeof create<typeof DirectorySchema>>[1]): Promise<Digest> {
  const msg = toBinary(DirectorySchema, create(DirectorySchema, dir));
  const d = await digestOf(msg);
  await cas.batchUpdateBlobs({ requests: [{ digest: d, data: msg }] });
  return d;
}

/** A Directory of about `kib` KiB (file entries with long names), unique per call. */
async function bigDir(kib: number, children: { name: string; digest: Digest }[] = []): Promise<Digest> {
  const salt = crypto.randomUUID();
  const file = await digestOf("content");
  const files = Array.from({ length: kib * 4 }, (_, i) => ({ name: `${salt}-${String(i).padStart(6, "0")}-${"x".repeat(180)}`, digest: file }));
  return putDir({ files, directories: children });
}

async function collect(req: Parameters<typeof cas.getTree>[0]) {
  const messages: { names: string[]; token: string }[] = [];
  for await (const r of cas.getTree(req)) {
    messages.push({ names: r.directories.flatMap((d) => d.files.slice(0, 1).map((f) => f.name)), token: r.nextPageToken });
  }
  return messages;
}

describe("GetTree paging", () => {
  it("without page_size, every message but the last carries a token that resumes right after it", async () => {
    // Four ~1 MiB directories: more than one message's worth.
    const leaves = [await bigDir(1024), await bigDir(1024), await bigDir(1024)];
    const root = await bigDir(1024, leaves.map((digest, i) => ({ name: `l${i}`, digest })));
    const messages = await collect({ rootDigest: root });
    expect(messages.length).toBeGreaterThan(1);
    const all = messages.flatMap((m) => m.names);
    expect(all).toHaveLength(4);
    expect(messages.at(-1)!.token).toBe("");
    for (const [i, m] of messages.slice(0, -1).entries()) {
      expect(m.token, `message ${i}`).not.toBe("");
      // Resuming from this message's token gives exactly what followed it.
      const rest: string[] = [];
      let token = m.token;
      while (token) {
        const page = await collect({ rootDigest: root, pageToken: token });
        rest.push(...page.flatMap((p) => p.names));
        token = page.at(-1)!.token;
      }
      expect(rest).toEqual(messages.slice(i + 1).flatMap((x) => x.names));
    }
  });

  it("a resumed page does not repeat a directory two parents share", async () => {
    const salt = crypto.randomUUID();
    const shared = await putDir({ files: [{ name: `shared-${salt}`, digest: await digestOf("s") }] });
    const b = await putDir({ files: [{ name: `b-${salt}`, digest: await digestOf("b") }], directories: [{ name: "s", digest: shared }] });
    const a = await putDir({ files: [{ name: `a-${salt}`, digest: await digestOf("a") }], directories: [{ name: "b", digest: b }] });
    // Breadth-first: root, a, shared, b — and b's child is the shared directory, already sent.
    const root = await putDir({ files: [{ name: `root-${salt}`, digest: await digestOf("r") }], directories: [{ name: "a", digest: a }, { name: "s", digest: shared }] });
    const unpaged = (await collect({ rootDigest: root })).flatMap((m) => m.names);
    expect(unpaged).toHaveLength(4);
    for (const pageSize of [1, 2, 3]) {
      const names: string[] = [];
      let token = "";
      let calls = 0;
      do {
        const page = await collect({ rootDigest: root, pageSize, pageToken: token });
        names.push(...page.flatMap((p) => p.names));
        token = page.at(-1)!.token;
      } while (token && ++calls < 10);
      expect(names, `page_size ${pageSize}`).toEqual(unpaged);
    }
  });
});

describe("a size-0 digest whose hash is not the empty blob's names nothing", () => {
  it("is NOT_FOUND on every read path, as FindMissingBlobs says, while the empty blob always reads", async () => {
    const dir = await putDir({ files: [{ name: crypto.randomUUID(), digest: await digestOf("z") }] });
    const zero = { hash: dir.hash, sizeBytes: 0n };
    expect((await cas.findMissingBlobs({ blobDigests: [zero] })).missingBlobDigests).toHaveLength(1);
    const read = await cas.batchReadBlobs({ digests: [zero] });
    expect(read.responses[0]!.status?.code).toBe(Code.NotFound);
    expect(await codeOf((async () => { for await (const _ of bs.read({ resourceName: `blobs/${dir.hash}/0` })); })())).toBe(Code.NotFound);
    expect(await codeOf((async () => { for await (const _ of cas.getTree({ rootDigest: zero })); })())).toBe(Code.NotFound);
    // A read at the end of a real blob, under a wrong size, is not a read of that blob either.
    expect(await codeOf((async () => { for await (const _ of bs.read({ resourceName: `blobs/${dir.hash}/${dir.sizeBytes + 5n}`, readOffset: dir.sizeBytes + 5n })); })())).toBe(Code.NotFound);

    const empty = await cas.batchReadBlobs({ digests: [{ hash: EMPTY_SHA256, sizeBytes: 0n }] });
    expect(empty.responses[0]!.status?.code ?? 0).toBe(0);
    const chunks = [];
    for await (const r of bs.read({ resourceName: `blobs/${EMPTY_SHA256}/0` })) chunks.push(r.data);
    expect(chunks.every((c) => c.byteLength === 0)).toBe(true);
  });
});

describe("per-blob statuses in batches", () => {
  it("keep the error details (BadRequest naming the field)", async () => {
    const good = await digestOf("batch ok " + crypto.randomUUID());
    const r = await cas.batchUpdateBlobs({
      requests: [
        { digest: { hash: "not-a-hash", sizeBytes: 1n }, data: new Uint8Array([1]) },
        { digest: good, data: new TextEncoder().encode("batch ok ") },
      ],
    });
    const bad = r.responses[0]!.status!;
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/google.rpc.BadRequest"]);
    const field = fromBinary(BadRequestSchema, bad.details[0]!.value).fieldViolations[0]?.field;
    expect(field).toBe("digest.hash");
    expect(r.responses[1]!.status!.code).toBe(Code.InvalidArgument); // bytes that are not the digest's
  });
});

describe("output node properties", () => {
  it("Capabilities advertises only what runners record, and a Command asking for more is INVALID_ARGUMENT", async () => {
    const caps = await grpcWebClient(Capabilities).getCapabilities({});
    expect(caps.executionCapabilities?.supportedNodeProperties).toEqual([...SUPPORTED_NODE_PROPERTIES]);
    expect(() => checkOutputNodeProperties({ outputNodeProperties: [] })).not.toThrow();
    expect(() => checkOutputNodeProperties({ outputNodeProperties: [...SUPPORTED_NODE_PROPERTIES] })).not.toThrow();
    expect(() => checkOutputNodeProperties({ outputNodeProperties: ["no_such_property"] })).toThrow(/no_such_property/);
    // Runners record unix_mode and mtime; any other name is refused, not ignored.
    expect(caps.executionCapabilities?.supportedNodeProperties).toEqual(["mtime", "unix_mode"]);
    expect(() => checkOutputNodeProperties({ outputNodeProperties: ["mtime", "unix_mode"] })).not.toThrow();
    expect(() => checkOutputNodeProperties({ outputNodeProperties: ["mtime", "owner"] })).toThrow(expect.objectContaining({ code: Code.InvalidArgument }));
  });
});
