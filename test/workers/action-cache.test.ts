import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  ActionCache,
  DirectorySchema,
  TreeSchema,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { connectClient, digestOf, errorOf, uniqueInstance, upload } from "./helpers.ts";

const ac = connectClient(ActionCache);



describe("ActionCache", () => {
  it("misses with NOT_FOUND, then serves what was stored, per instance", async () => {
    const instanceName = uniqueInstance();
    const action = await digestOf("action " + crypto.randomUUID());
    expect((await errorOf(ac.getActionResult({ instanceName, actionDigest: action }))).code).toBe(Code.NotFound);
    const out = await upload("output " + crypto.randomUUID());
    const stdout = await upload("hello stdout " + crypto.randomUUID());
    await ac.updateActionResult({
      instanceName,
      actionDigest: action,
      actionResult: { exitCode: 0, outputFiles: [{ path: "out/a.txt", digest: out, isExecutable: true }], stdoutDigest: stdout },
    });
    const hit = await ac.getActionResult({ instanceName, actionDigest: action });
    expect(hit.outputFiles[0]).toMatchObject({ path: "out/a.txt", isExecutable: true });
    expect(hit.stdoutRaw.byteLength).toBe(0);
    expect((await errorOf(ac.getActionResult({ instanceName: uniqueInstance(), actionDigest: action }))).code).toBe(Code.NotFound);
  });

  it("inlines stdout, stderr and requested output files", async () => {
    const instanceName = uniqueInstance();
    const action = await digestOf("inline action " + crypto.randomUUID());
    const text = "inline me " + crypto.randomUUID();
    const out = await upload(text);
    const stdout = await upload("out: " + text);
    await ac.updateActionResult({
      instanceName,
      actionDigest: action,
      actionResult: { outputFiles: [{ path: "a", digest: out }, { path: "b", digest: out }], stdoutDigest: stdout },
    });
    const hit = await ac.getActionResult({ instanceName, actionDigest: action, inlineStdout: true, inlineOutputFiles: ["b"] });
    expect(new TextDecoder().decode(hit.stdoutRaw)).toBe("out: " + text);
    expect(hit.outputFiles[0]!.contents.byteLength).toBe(0);
    expect(new TextDecoder().decode(hit.outputFiles[1]!.contents)).toBe(text);
  });

  it("refuses an entry whose blobs are not in the CAS, naming each one", async () => {
    const action = await digestOf("incomplete " + crypto.randomUUID());
    const ghost = await digestOf("never uploaded " + crypto.randomUUID());
    const err = await errorOf(
      ac.updateActionResult({ instanceName: "", actionDigest: action, actionResult: { outputFiles: [{ path: "x", digest: ghost }] } }),
    );
    expect(err.code).toBe(Code.FailedPrecondition);
    const [pf] = err.findDetails(PreconditionFailureSchema);
    expect(pf?.violations).toEqual([expect.objectContaining({ type: "MISSING", subject: `blobs/${ghost.hash}/${ghost.sizeBytes}` })]);
  });

  it("stops serving an entry when a file inside an output tree disappears", async () => {
    const instanceName = uniqueInstance();
    const action = await digestOf("tree action " + crypto.randomUUID());
    const file = await upload("in the tree " + crypto.randomUUID());
    const tree = create(TreeSchema, { root: create(DirectorySchema, { files: [{ name: "f", digest: file }] }) });
    const treeDigest = await upload(toBinary(TreeSchema, tree));
    await ac.updateActionResult({ instanceName, actionDigest: action, actionResult: { outputDirectories: [{ path: "d", treeDigest }] } });
    expect((await ac.getActionResult({ instanceName, actionDigest: action })).outputDirectories).toHaveLength(1);
    // Evict the file through the index, as eviction does.
    const { env } = await import("cloudflare:test");
    const shard = env.CAS_INDEX.get(env.CAS_INDEX.idFromName(`default:${file.hash[0]}`));
    await shard.remove([file.hash]);
    expect((await errorOf(ac.getActionResult({ instanceName, actionDigest: action }))).code).toBe(Code.NotFound);
  });

  it("validates digests in requests and results", async () => {
    expect((await errorOf(ac.getActionResult({ actionDigest: { hash: "nothex", sizeBytes: 1n } }))).code).toBe(Code.InvalidArgument);
    expect((await errorOf(ac.getActionResult({}))).code).toBe(Code.InvalidArgument);
    const action = await digestOf("bad result " + crypto.randomUUID());
    const err = await errorOf(
      ac.updateActionResult({ actionDigest: action, actionResult: { outputFiles: [{ path: "x", digest: { hash: "xyz", sizeBytes: 1n } }] } }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(/output_files\[0\]/);
  });
});
