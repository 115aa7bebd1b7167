// kiln.invocation.v1.RemoteActions: the action cache and Execute calls that carry a build's
// invocation id in RequestMetadata are counted on that invocation, per action, and listed.
import { create, toBinary } from "@bufbuild/protobuf";
import { base64Encode } from "@bufbuild/protobuf/wire";
import { Code } from "@connectrpc/connect";
import { SELF } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionCache, Execution, RequestMetadataSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { RemoteActions } from "../../src/gen/kiln/invocation/v1/remote_actions_pb.ts";
import { armFault, clearFaults } from "../../src/execution/faults.ts";
import { errorOf, grpcWebClient, connectClient } from "./helpers.ts";
import { drain, newAction, request, sharedRunner, upload, waitFor } from "./execution-helpers.ts";
import type { FakeRunner } from "./fake-runner.ts";

const METADATA = "build.bazel.remote.execution.v2.requestmetadata-bin";
const metadataFor = (toolInvocationId: string, targetId = "", actionMnemonic = "") =>
  base64Encode(toBinary(RequestMetadataSchema, create(RequestMetadataSchema, { toolInvocationId, targetId, actionMnemonic })));

const remote = connectClient(RemoteActions);
const acFor = (id: string, target = "", mnemonic = "") => grpcWebClient(ActionCache, { [METADATA]: metadataFor(id, target, mnemonic) });

const listed = (id: string, pageSize = 0, pageToken = "") => remote.listRemoteActions({ name: `invocations/${id}`, pageSize, pageToken });

/** Recording runs after the answer: waits until the invocation's totals say `calls` calls. */
async function settled(id: string, calls: number) {
  return waitFor(`${calls} recorded calls on ${id}`, async () => {
    const r = await listed(id);
    const n = r.totalCacheHits + r.totalCacheMisses + r.totalCacheWrites + r.totalExecutions;
    expect(n).toBeLessThanOrEqual(BigInt(calls));
    return n === BigInt(calls) && r;
  });
}

const actionDigest = async () => (await upload(`action ${crypto.randomUUID()}`))[0]!;

describe("remote actions of an invocation", () => {
  let runner: FakeRunner;
  beforeAll(async () => {
    runner = await sharedRunner();
  });
  afterAll(() => clearFaults());

  it("counts cache misses, writes and hits per action, with the target and mnemonic", async () => {
    const id = crypto.randomUUID();
    const ac = acFor(id, "//pkg:lib", "CppCompile");
    const digest = await actionDigest();
    const instanceName = `ra/${id.slice(0, 8)}`;
    expect((await errorOf(ac.getActionResult({ instanceName, actionDigest: digest })))?.code).toBe(Code.NotFound);
    await ac.updateActionResult({ instanceName, actionDigest: digest, actionResult: { exitCode: 0 } });
    await ac.getActionResult({ instanceName, actionDigest: digest });
    await ac.getActionResult({ instanceName, actionDigest: digest });
    const r = await settled(id, 4);
    expect(r.totalActions).toBe(1n);
    const [a] = r.remoteActions;
    expect(a).toMatchObject({ instanceName, targetId: "//pkg:lib", actionMnemonic: "CppCompile", cacheHits: 2n, cacheMisses: 1n, cacheWrites: 1n, executions: 0n });
    expect(a!.actionDigest).toMatchObject({ hash: digest.hash, sizeBytes: digest.sizeBytes });
    expect(a!.firstCallTime!.seconds).toBeLessThanOrEqual(a!.lastCallTime!.seconds);
    // The same over REST (the proto's google.api.http binding).
    const rest = await SELF.fetch(`http://kiln/v1/invocations/${id}/remoteActions?pageSize=10`);
    expect(rest.status).toBe(200);
    const body = (await rest.json()) as { remoteActions: { cacheHits: string; actionDigest: { hash: string } }[]; totalCacheHits: string };
    expect(body.totalCacheHits).toBe("2");
    expect(body.remoteActions[0]!.actionDigest.hash).toBe(digest.hash);
  });

  it("counts Execute as an execution with its operation, and a cached Execute as a hit", async () => {
    const id = crypto.randomUUID();
    const exec = grpcWebClient(Execution, { [METADATA]: metadataFor(id) });
    const action = await newAction("ok");
    const ran = (await drain(exec.execute(request(action)))).at(-1)!;
    const cached = (await drain(exec.execute(request(action)))).at(-1)!;
    expect(cached.name).not.toBe(ran.name);
    const r = await settled(id, 2);
    expect(r.remoteActions).toHaveLength(1);
    expect(r.remoteActions[0]).toMatchObject({ instanceName: action.instanceName, executions: 1n, cacheHits: 1n });
    // The latest Execute's operation: the cached one, which GetOperation can find.
    expect(r.remoteActions[0]!.lastOperation).toBe(cached.name);
    expect(runner).toBeDefined();
  });

  it("records nothing for calls without an invocation id, or with one that is not a UUID", async () => {
    const digest = await actionDigest();
    for (const ac of [grpcWebClient(ActionCache), acFor("not-a-uuid")]) {
      expect((await errorOf(ac.getActionResult({ instanceName: "ra", actionDigest: digest })))?.code).toBe(Code.NotFound);
    }
    // A call that names an invocation, made after those, is the only one recorded anywhere we can see.
    const id = crypto.randomUUID();
    await errorOf(acFor(id).getActionResult({ instanceName: "ra", actionDigest: digest }));
    expect((await settled(id, 1)).totalActions).toBe(1n);
    expect((await listed(crypto.randomUUID())).remoteActions).toEqual([]);
  });

  it("a failed recording neither fails the cache call nor is retried into a double count", async () => {
    const id = crypto.randomUUID();
    const ac = acFor(id);
    const digest = await actionDigest();
    armFault("invocation.remoteCall");
    expect((await errorOf(ac.getActionResult({ instanceName: "ra", actionDigest: digest })))?.code).toBe(Code.NotFound);
    await ac.updateActionResult({ instanceName: "ra", actionDigest: digest, actionResult: { exitCode: 0 } });
    const r = await settled(id, 1);
    expect(r.remoteActions[0]).toMatchObject({ cacheMisses: 0n, cacheWrites: 1n });
  });

  it("pages in first-call order and refuses tokens and names it did not issue", async () => {
    const id = crypto.randomUUID();
    const ac = acFor(id);
    const digests = [await actionDigest(), await actionDigest(), await actionDigest()];
    for (const d of digests) {
      await errorOf(ac.getActionResult({ instanceName: "ra", actionDigest: d }));
      await settled(id, digests.indexOf(d) + 1);
    }
    const seen: string[] = [];
    let token = "";
    do {
      const page = await listed(id, 2, token);
      expect(page.totalActions).toBe(3n);
      seen.push(...page.remoteActions.map((a) => a.actionDigest!.hash));
      token = page.nextPageToken;
    } while (token);
    expect(seen).toEqual(digests.map((d) => d.hash));
    expect((await errorOf(listed(id, 2, "bogus")))?.code).toBe(Code.InvalidArgument);
    expect((await errorOf(remote.listRemoteActions({ name: "invocations/not-a-uuid" })))?.code).toBe(Code.InvalidArgument);
    expect((await errorOf(remote.listRemoteActions({ name: `builds/${id}` })))?.code).toBe(Code.InvalidArgument);
    expect((await errorOf(listed(id, -1)))?.code).toBe(Code.InvalidArgument);
  });
});
