// ResultStore conformance: Merge overwrites Files that share a uid (file.proto), and
// DownloadMetadata carries when the invocation was created, finalized and became immutable.
import { runDurableObjectAlarm } from "cloudflare:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { UploadStatus } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { InvocationSchema } from "../../src/gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { connectClient } from "./helpers.ts";
import { invocationStub, newInvocation, stored, upload, uuid } from "./resultstore-upload-helpers.ts";

const download = connectClient(ResultStoreDownload);

describe("Merge", () => {
  it("overwrites a File whose uid is already there and appends the others", async () => {
    const { id, name, token } = await newInvocation({ invocation: { files: [{ uid: "log", uri: "file:///old" }, { uid: "keep", uri: "file:///keep" }] } });
    await upload.mergeInvocation({
      invocation: { name, files: [{ uid: "log", uri: "file:///new" }, { uid: "extra", uri: "file:///extra" }] },
      updateMask: { paths: ["files"] },
      authorizationToken: token,
      requestId: uuid(),
    });
    const files = (await stored(InvocationSchema, id, name))?.files.map((f) => [f.uid, f.uri]);
    expect(files).toEqual([
      ["log", "file:///new"],
      ["keep", "file:///keep"],
      ["extra", "file:///extra"],
    ]);
  });
});

describe("DownloadMetadata", () => {
  it("carries create, finalize and immutable times as the invocation reaches each", async () => {
    const before = Date.now();
    const { id, name, token } = await newInvocation();
    const md = () => download.getInvocationDownloadMetadata({ name: `${name}/downloadMetadata` });
    const created = await md();
    expect(created.uploadStatus).toBe(UploadStatus.UPLOADING);
    expect(timestampMs(created.createTime!)).toBeGreaterThanOrEqual(before - 1000);
    expect(created.finalizeTime).toBeUndefined();
    expect(created.immutableTime).toBeUndefined();

    await upload.finalizeInvocation({ name, authorizationToken: token });
    const finalized = await md();
    expect(finalized.uploadStatus).toBe(UploadStatus.POST_PROCESSING);
    expect(timestampMs(finalized.finalizeTime!)).toBeGreaterThanOrEqual(timestampMs(created.createTime!));
    expect(finalized.createTime).toEqual(created.createTime);

    await runDurableObjectAlarm(invocationStub(id));
    const immutable = await md();
    expect(immutable.uploadStatus).toBe(UploadStatus.IMMUTABLE);
    expect(timestampMs(immutable.immutableTime!)).toBeGreaterThanOrEqual(timestampMs(finalized.finalizeTime!));
    expect(immutable.finalizeTime).toEqual(finalized.finalizeTime);
  });
});
