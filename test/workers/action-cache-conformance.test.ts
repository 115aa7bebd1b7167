// REAPI conformance of the ActionCache: DIRECTORY_ONLY outputs, inlining only on request, and
// action keys whose size_bytes is part of the key on every surface that carries it.
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ActionCache, ActionResultSchema, DirectorySchema, TreeSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { bytes, connectClient, digestOf, errorOf, uniqueInstance, upload } from "./helpers.ts";

const ac = connectClient(ActionCache);


const dirBytes = (dir: Parameters<typeof create<typeof DirectorySchema>>[1]) => toBinary(DirectorySchema, create(DirectorySchema, dir));

describe("DIRECTORY_ONLY results (root_directory_digest without a Tree)", () => {
  it("are accepted and served while every nested Directory and file is present", async () => {
    const instanceName = uniqueInstance("dironly");
    const file = await upload("deep file " + crypto.randomUUID());
    const child = await upload(dirBytes({ files: [{ name: "f", digest: file }] }));
    const root = await upload(dirBytes({ directories: [{ name: "c", digest: child }] }));
    const action = await digestOf("dir-only action " + crypto.randomUUID());
    await ac.updateActionResult({ instanceName, actionDigest: action, actionResult: { outputDirectories: [{ path: "out", rootDirectoryDigest: root }] } });
    expect((await ac.getActionResult({ instanceName, actionDigest: action })).outputDirectories[0]?.rootDirectoryDigest?.hash).toBe(root.hash);

    // The file two levels down is evicted: the entry is incomplete, so it is a miss.
    const shard = env.CAS_INDEX.get(env.CAS_INDEX.idFromName(`default:${file.hash[0]}`));
    await shard.remove([file.hash]);
    expect((await errorOf(ac.getActionResult({ instanceName, actionDigest: action }))).code).toBe(Code.NotFound);
  });

  it("with a Tree beside the root (TREE_AND_DIRECTORY, as Kiln's runner writes them) are a miss once a Directory below the root is gone", async () => {
    const instanceName = uniqueInstance("tree-and-dir");
    const file = await upload("tree and dir file " + crypto.randomUUID());
    const childDir = { files: [{ name: "f", digest: file }] };
    const child = await upload(dirBytes(childDir));
    const rootDir = { directories: [{ name: "c", digest: child }] };
    const root = await upload(dirBytes(rootDir));
    const tree = await upload(toBinary(TreeSchema, create(TreeSchema, { root: rootDir, children: [childDir] })));
    const action = await digestOf("tree and dir action " + crypto.randomUUID());
    await ac.updateActionResult({ instanceName, actionDigest: action, actionResult: { outputDirectories: [{ path: "out", treeDigest: tree, rootDirectoryDigest: root }] } });
    expect((await ac.getActionResult({ instanceName, actionDigest: action })).outputDirectories[0]?.rootDirectoryDigest?.hash).toBe(root.hash);

    // The child Directory is evicted; the file and the Tree remain. A client walking the root would fail.
    const shard = env.CAS_INDEX.get(env.CAS_INDEX.idFromName(`default:${child.hash[0]}`));
    await shard.remove([child.hash]);
    expect((await errorOf(ac.getActionResult({ instanceName, actionDigest: action }))).code).toBe(Code.NotFound);
  });

  it("are refused when a nested Directory is missing, naming it", async () => {
    const ghost = await digestOf(dirBytes({ files: [{ name: crypto.randomUUID(), digest: await digestOf("g") }] }));
    const root = await upload(dirBytes({ directories: [{ name: "g", digest: ghost }] }));
    const action = await digestOf("dir-only incomplete " + crypto.randomUUID());
    const err = await errorOf(ac.updateActionResult({ actionDigest: action, actionResult: { outputDirectories: [{ path: "out", rootDirectoryDigest: root }] } }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.findDetails(PreconditionFailureSchema)[0]?.violations.map((v) => v.subject)).toEqual([`blobs/${ghost.hash}/${ghost.sizeBytes}`]);
    const neither = await errorOf(ac.updateActionResult({ actionDigest: action, actionResult: { outputDirectories: [{ path: "out" }] } }));
    expect(neither.code).toBe(Code.InvalidArgument);
  });
});

describe("inlining", () => {
  it("returns stored stdout, stderr and file contents only when asked for", async () => {
    const instanceName = uniqueInstance("inline");
    const text = "contents " + crypto.randomUUID();
    const out = await upload(text);
    const std = await upload("std " + text);
    const action = await digestOf("inline-only action " + crypto.randomUUID());
    // A client that uploads inlined bytes anyway (REAPI says it SHOULD NOT).
    await ac.updateActionResult({
      instanceName,
      actionDigest: action,
      actionResult: {
        outputFiles: [{ path: "a", digest: out, contents: bytes(text) }],
        stdoutDigest: std,
        stdoutRaw: bytes("std " + text),
        stderrDigest: std,
        stderrRaw: bytes("std " + text),
      },
    });
    const plain = await ac.getActionResult({ instanceName, actionDigest: action });
    expect([plain.stdoutRaw.byteLength, plain.stderrRaw.byteLength, plain.outputFiles[0]!.contents.byteLength]).toEqual([0, 0, 0]);
    const asked = await ac.getActionResult({ instanceName, actionDigest: action, inlineStderr: true, inlineOutputFiles: ["a"] });
    expect(asked.stdoutRaw.byteLength).toBe(0);
    expect(new TextDecoder().decode(asked.stderrRaw)).toBe("std " + text);
    expect(new TextDecoder().decode(asked.outputFiles[0]!.contents)).toBe(text);
  });
});

describe("inlining within the message budget", () => {
  it("stored inline bytes count against MAX_INLINE_BYTES (1 MiB) like fetched ones: what does not fit keeps only its digest", async () => {
    const instanceName = uniqueInstance("inline-budget");
    // Three 600 KiB files a client uploaded with their contents inline, and one it did not.
    const seed = crypto.randomUUID();
    const files = Array.from({ length: 4 }, (_, i) => Uint8Array.from({ length: 600 * 1024 }, (_, j) => (j * 31 + i * 7 + seed.charCodeAt(j % 36)) & 0xff));
    const digests = await Promise.all(files.map((f) => upload(f)));
    const action = await digestOf("inline budget " + crypto.randomUUID());
    await ac.updateActionResult({
      instanceName,
      actionDigest: action,
      actionResult: { outputFiles: files.map((f, i) => ({ path: `f${i}`, digest: digests[i], contents: i < 3 ? f : new Uint8Array() })) },
    });
    const got = await ac.getActionResult({ instanceName, actionDigest: action, inlineOutputFiles: ["f0", "f1", "f2", "f3"] });
    const inlined = got.outputFiles.filter((f) => f.contents.byteLength > 0);
    expect(inlined.reduce((n, f) => n + f.contents.byteLength, 0)).toBeLessThanOrEqual(1024 * 1024);
    expect(inlined.length).toBe(1);
    for (const f of got.outputFiles) {
      const i = Number(f.path.slice(1));
      expect(f.digest?.hash).toBe(digests[i]!.hash);
      if (f.contents.byteLength) expect(f.contents).toEqual(files[i]);
    }
  });
});

describe("action keys include size_bytes", () => {
  it("a lookup under another size misses over gRPC and REST; the HTTP cache (no sizes) still hits", async () => {
    const instanceName = uniqueInstance("acsize");
    const out = await upload("sized " + crypto.randomUUID());
    const action = await digestOf("sized action " + crypto.randomUUID());
    await ac.updateActionResult({ instanceName, actionDigest: action, actionResult: { outputFiles: [{ path: "o", digest: out }] } });
    expect((await ac.getActionResult({ instanceName, actionDigest: action })).outputFiles).toHaveLength(1);
    const wrong = { hash: action.hash, sizeBytes: action.sizeBytes + 1n };
    expect((await errorOf(ac.getActionResult({ instanceName, actionDigest: wrong }))).code).toBe(Code.NotFound);
    expect((await SELF.fetch(`http://kiln/v2/${instanceName}/actionResults/${action.hash}/${wrong.sizeBytes}`)).status).toBe(404);
    expect((await SELF.fetch(`http://kiln/v2/${instanceName}/actionResults/${action.hash}/${action.sizeBytes}`)).status).toBe(200);
    expect((await SELF.fetch(`http://kiln/cache/${instanceName}/ac/${action.hash}`)).status).toBe(200);
  });

  it("an HTTP cache entry takes the size of the Action blob in the CAS", async () => {
    const instanceName = uniqueInstance("acsize-http");
    const out = await upload("http sized " + crypto.randomUUID());
    const action = await upload("an Action message " + crypto.randomUUID());
    const result = toBinary(ActionResultSchema, create(ActionResultSchema, { outputFiles: [{ path: "o", digest: out }] }));
    const put = await SELF.fetch(`http://kiln/cache/${instanceName}/ac/${action.hash}`, { method: "PUT", body: result });
    expect(put.status).toBe(200);
    expect((await ac.getActionResult({ instanceName, actionDigest: action })).outputFiles).toHaveLength(1);
    expect((await errorOf(ac.getActionResult({ instanceName, actionDigest: { hash: action.hash, sizeBytes: 3n } }))).code).toBe(Code.NotFound);
  });
});
