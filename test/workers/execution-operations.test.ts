// Remote execution, worker side: following and managing operations (WaitExecution,
// google.longrunning Get/List/Cancel/Delete/Wait, retention), over every surface and with API
// keys. Actions are "run" by scripted runners that dial the pool (fake-runner.ts).
import { create, createRegistry, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { SELF, env, runDurableObjectAlarm } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ActionCache,
  ActionSchema,
  CommandSchema,
  ContentAddressableStorage,
  DirectorySchema,
  Execution,
  file_build_bazel_remote_execution_v2_remote_execution,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { file_google_longrunning_operations, Operations, type Operation } from "../../src/gen/google/longrunning/operations_pb.ts";
import { file_google_rpc_error_details, PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { digestOf, errorOf, grpcWebClient } from "./helpers.ts";
import {
  ac,
  checkShape,
  drain,
  EXECUTING,
  exec,
  executeAll,
  firstOf,
  indexed,
  instanceFor,
  newAction,
  opStub,
  ops,
  request,
  responseOf,
  runningOn,
  runs,
  sharedRunner,
  stageOf,
  SUITE,
  waitFor,
} from "./execution-helpers.ts";

beforeAll(async () => {
  await sharedRunner();
});

describe("WaitExecution and Operations", { timeout: 30_000 }, () => {
  it("WaitExecution picks up an operation mid-flight after the Execute stream went away, and sees it complete", async () => {
    const a = await newAction("sleep-1500");
    const abort = new AbortController();
    const it0 = exec.execute(request(a), { signal: abort.signal })[Symbol.asyncIterator]();
    const first = (await it0.next()).value as Operation;
    expect(first.done).toBe(false);
    abort.abort();
    await it0.return?.(undefined).catch(() => {});
    await runningOn(a.instanceName, 1);

    const waited = await drain(exec.waitExecution({ name: first.name }), a.digest);
    expect(stageOf(waited[0]!)).toBe(EXECUTING);
    expect(waited.every((op) => op.name === first.name)).toBe(true);
    expect(responseOf(waited.at(-1)!).result?.exitCode).toBe(0);
    // The run was not disturbed by the client going away.
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["ok"]);
    // Completed operations stay readable: WaitExecution answers at once with the result.
    const again = await drain(exec.waitExecution({ name: first.name }));
    expect(again).toHaveLength(1);
    expect(responseOf(again[0]!).result?.exitCode).toBe(0);
  });

  it("WaitExecution and GetOperation answer NOT_FOUND for unknown or malformed names", async () => {
    for (const name of [`operations/${crypto.randomUUID()}`, "operations/nope", "nope"]) {
      expect((await errorOf(drain(exec.waitExecution({ name })))).code).toBe(Code.NotFound);
      expect((await errorOf(ops.getOperation({ name }))).code).toBe(Code.NotFound);
    }
  });

  it("GetOperation reports the live state, then the completed one with its response", async () => {
    const a = await newAction("sleep-1000");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    await runningOn(a.instanceName, 1);
    const live = await ops.getOperation({ name: first.name });
    checkShape(live, a.digest);
    expect(live.done).toBe(false);
    expect(stageOf(live)).toBe(EXECUTING);
    await rest;
    const done = await ops.getOperation({ name: first.name });
    checkShape(done, a.digest);
    expect(done.done).toBe(true);
    expect(responseOf(done).result?.exitCode).toBe(0);
  });

  it("ListOperations filters by done and stage", async () => {
    const instanceName = instanceFor("sleep-1500");
    const [finished, running] = [await newAction("", { instanceName }), await newAction("", { instanceName })];
    const fin = await executeAll(finished);
    const r = await firstOf(exec.execute(request(running)));
    await waitFor("EXECUTING", async () => stageOf(await ops.getOperation({ name: r.first.name })) === EXECUTING);
    const list = async (filter: string) =>
      (await ops.listOperations({ name: "operations", filter: `instance_name="${instanceName}" AND ${filter}` })).operations.map((o) => o.name);
    const finName = fin.at(-1)!.name;
    await indexed(finName, r.first.name);
    expect(await list("done=true")).toEqual([finName]);
    expect(await list("done = false")).toEqual([r.first.name]);
    expect(await list("stage=EXECUTING")).toEqual([r.first.name]);
    expect(await list("stage=COMPLETED")).toEqual([finName]);
    expect(await list("stage=QUEUED")).toEqual([]);
    expect((await list("done=false AND stage=EXECUTING")).length).toBe(1);
    const all = await ops.listOperations({ name: "operations", filter: `instance_name="${instanceName}"` });
    for (const op of all.operations) checkShape(op);
    expect(all.operations.map((o) => o.name).sort()).toEqual([finName, r.first.name].sort());
    expect((await errorOf(ops.listOperations({ name: "operations", filter: "color=red" }))).code).toBe(Code.InvalidArgument);
    await r.rest;
    await indexed(r.first.name);
    expect(await list("done=false")).toEqual([]);
  });

  it("ListOperations pages with page_size and page_token, without duplicates or gaps", async () => {
    const instanceName = instanceFor("ok");
    const actions = await Promise.all(Array.from({ length: 7 }, () => newAction("", { instanceName })));
    const names = (await Promise.all(actions.map((a) => executeAll(a)))).map((s) => s.at(-1)!.name);
    const filter = `instance_name=${instanceName}`;
    await indexed(...names);
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await ops.listOperations({ name: "operations", filter, pageSize: 3, pageToken });
      expect(page.operations.length).toBeLessThanOrEqual(3);
      seen.push(...page.operations.map((o) => o.name));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken && pages < 10);
    expect(pages).toBe(3);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual([...names].sort());
    // A token is bound to its filter.
    const p1 = await ops.listOperations({ name: "operations", filter, pageSize: 3 });
    expect((await errorOf(ops.listOperations({ name: "operations", filter: "done=true", pageToken: p1.nextPageToken }))).code).toBe(
      Code.InvalidArgument,
    );
  });

  it("DeleteOperation forgets the operation (NOT_FOUND after) without cancelling the run", async () => {
    const a = await newAction("sleep-1500");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    await runningOn(a.instanceName, 1);
    await ops.deleteOperation({ name: first.name });
    expect((await errorOf(ops.getOperation({ name: first.name }))).code).toBe(Code.NotFound);
    expect((await errorOf(drain(exec.waitExecution({ name: first.name })))).code).toBe(Code.NotFound);
    // The Execute stream that was following it ends with NOT_FOUND too (the client calls Execute again).
    expect((await errorOf(rest)).code).toBe(Code.NotFound);
    const list = await ops.listOperations({ name: "operations", filter: `instance_name=${a.instanceName}` });
    expect(list.operations).toEqual([]);
    // The run goes on to the end, and its result is still cached.
    const attempts = await waitFor("the run to end", async () => {
      const r = (runs({ action: a.hash })).attempts;
      return r.every((x) => x.outcome !== "running") && r;
    });
    expect(attempts.map((x) => x.outcome)).toEqual(["ok"]);
    await waitFor("the result in the action cache", async () =>
      ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest }).then(
        () => true,
        () => false,
      ),
    );
    expect((await errorOf(ops.getOperation({ name: first.name }))).code).toBe(Code.NotFound);
  });

  it("removes a completed operation once its retention has passed: WaitExecution then answers NOT_FOUND", async () => {
    const saved = env.OPERATION_RETENTION_SECONDS;
    env.OPERATION_RETENTION_SECONDS = "1";
    try {
      const a = await newAction("ok");
      const name = (await executeAll(a)).at(-1)!.name;
      expect((await ops.getOperation({ name })).done).toBe(true);
      await new Promise((r) => setTimeout(r, 1100));
      await runDurableObjectAlarm(opStub(name)); // if it has not fired by itself yet
      expect((await errorOf(drain(exec.waitExecution({ name })))).code).toBe(Code.NotFound);
      expect((await errorOf(ops.getOperation({ name }))).code).toBe(Code.NotFound);
      const list = await ops.listOperations({ name: "operations", filter: `instance_name=${a.instanceName}` });
      expect(list.operations).toEqual([]);
      // The result itself stays in the action cache.
      await ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest });
    } finally {
      env.OPERATION_RETENTION_SECONDS = saved;
    }
  });
});

describe("WaitOperation", { timeout: 30_000 }, () => {
  it("returns the current state when its timeout passes first, and the done operation once it completes", async () => {
    const a = await newAction("sleep-1500");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    const early = await ops.waitOperation({ name: first.name, timeout: { seconds: 0n, nanos: 200_000_000 } });
    checkShape(early, a.digest);
    expect(early.done).toBe(false);
    const done = await ops.waitOperation({ name: first.name, timeout: { seconds: 20n } });
    checkShape(done, a.digest);
    expect(done.done).toBe(true);
    expect(responseOf(done).result?.exitCode).toBe(0);
    await rest;
    expect((await errorOf(ops.waitOperation({ name: `operations/${crypto.randomUUID()}` }))).code).toBe(Code.NotFound);
  });
});

describe("Execution over the JSON surfaces", { timeout: 30_000 }, () => {
  // Any fields (Operation.metadata and .response) need the type registry on both ends.
  const registry = createRegistry(file_build_bazel_remote_execution_v2_remote_execution, file_google_longrunning_operations, file_google_rpc_error_details);
  const transport = createConnectTransport({
    baseUrl: "http://kiln",
    fetch: ((input: RequestInfo | URL, init?: RequestInit) => SELF.fetch(input as string, { ...init, redirect: "manual" })) as typeof fetch,
    jsonOptions: { registry },
  });
  const jsonExec = createClient(Execution, transport);
  const jsonOps = createClient(Operations, transport);

  it("Connect JSON: Execute, WaitExecution, GetOperation and ListOperations carry ExecuteOperationMetadata and ExecuteResponse", async () => {
    const a = await newAction("sleep-300");
    const stream = await drain(jsonExec.execute(request(a)), a.digest);
    const name = stream.at(-1)!.name;
    expect(responseOf(stream.at(-1)!).result?.exitCode).toBe(0);
    expect(responseOf((await drain(jsonExec.waitExecution({ name })))[0]!).result?.exitCode).toBe(0);
    expect(responseOf(await jsonOps.getOperation({ name })).result?.exitCode).toBe(0);
    await indexed(name);
    const list = await jsonOps.listOperations({ name: "operations", filter: `instance_name=${a.instanceName}` });
    expect(list.operations.map((o) => o.name)).toEqual([name]);
    // Errors with details too.
    const missing = await digestOf(`missing ${crypto.randomUUID()}`);
    const err = await errorOf(drain(jsonExec.execute({ instanceName: a.instanceName, actionDigest: missing })));
    expect(err.findDetails(PreconditionFailureSchema)[0]?.violations[0]?.subject).toBe(`blobs/${missing.hash}/${missing.sizeBytes}`);
  });

  it("REST: Execute streams a JSON array of Operations; /v1/operations gets, lists, cancels and deletes", async () => {
    const a = await newAction("sleep-20000");
    const digest = { hash: a.digest.hash, sizeBytes: String(a.digest.sizeBytes) };
    const abort = new AbortController();
    const r = await SELF.fetch(`http://kiln/v2/${a.instanceName}/actions:execute`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ actionDigest: digest }),
      signal: abort.signal,
    });
    expect(r.status).toBe(200);
    await runningOn(a.instanceName, 1);
    const [attempt] = (runs({ action: a.hash })).attempts;
    const name = attempt!.operation;
    type JsonOp = { name: string; done?: boolean; metadata: { "@type": string; stage: string }; response?: { "@type": string; status?: { code: number } } };
    const get = await SELF.fetch(`http://kiln/v1/${name}`);
    expect(get.status).toBe(200);
    const op = (await get.json()) as JsonOp;
    expect(op).toMatchObject({ name, metadata: { "@type": "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata", stage: "EXECUTING" } });
    await indexed(name);
    const listed = (await (await SELF.fetch(`http://kiln/v1/operations?filter=${encodeURIComponent(`instance_name=${a.instanceName} AND done=false`)}`)).json()) as {
      operations: JsonOp[];
    };
    expect(listed.operations.map((o) => o.name)).toEqual([name]);
    expect((await SELF.fetch(`http://kiln/v1/${name}:cancel`, { method: "POST", body: "{}" })).status).toBe(200);
    const ops = (await r.json()) as JsonOp[];
    const last = ops.at(-1)!;
    expect(last).toMatchObject({ name, done: true, response: { "@type": "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse", status: { code: Code.Canceled } } });
    expect((await SELF.fetch(`http://kiln/v1/${name}`, { method: "DELETE" })).status).toBe(200);
    const gone = await SELF.fetch(`http://kiln/v1/${name}`);
    expect(gone.status).toBe(404);
    expect(((await gone.json()) as { error: { status: string } }).error.status).toBe("NOT_FOUND");
  });
});

describe("Execution with API keys", { timeout: 30_000 }, () => {
  const ACME = "acme-key-0123456789-0123456789ab";
  const ACME_RO = "acme-ro-key-0123456789-012345678";
  const OTHER = "other-key-0123456789-0123456789a";
  const OTHER_NARROW = "other-narrow-key-0123456789-0123";
  beforeAll(() => {
    env.API_KEYS = JSON.stringify([
      { key: ACME, instances: [""], access: "read-write", tenant: "acme", name: "ci" },
      { key: ACME_RO, instances: [""], access: "read", tenant: "acme", name: "reader" },
      { key: OTHER, instances: [""], access: "read-write", tenant: "other", name: "other" },
      { key: OTHER_NARROW, instances: ["elsewhere/"], access: "read", tenant: "other", name: "other-narrow" },
    ]);
  });
  afterAll(() => {
    delete env.API_KEYS;
  });
  const as = (key: string) => ({
    cas: grpcWebClient(ContentAddressableStorage, { authorization: `Bearer ${key}` }),
    exec: grpcWebClient(Execution, { authorization: `Bearer ${key}` }),
    ops: grpcWebClient(Operations, { authorization: `Bearer ${key}` }),
    ac: grpcWebClient(ActionCache, { authorization: `Bearer ${key}` }),
  });

  /**
   * A fresh action (a /bin/true Command, an empty input root, and the outputs the fake runner
   * reports) uploaded to each given tenant's CAS: newAction uploads with the open-mode client only.
   */
  async function actionIn(...tenants: ReturnType<typeof as>[]) {
    const command = toBinary(CommandSchema, create(CommandSchema, { arguments: ["/bin/true", crypto.randomUUID()] }));
    const root = toBinary(DirectorySchema, create(DirectorySchema, {}));
    const blobs = await Promise.all([command, root].map(async (data) => ({ digest: await digestOf(data), data })));
    const action = toBinary(
      ActionSchema,
      create(ActionSchema, { commandDigest: blobs[0]!.digest, inputRootDigest: blobs[1]!.digest, platform: { properties: [{ name: "suite", value: SUITE }] } }),
    );
    const actionDigest = await digestOf(action);
    const outputs = [`stdout of ${actionDigest.hash}\n`, `output of ${actionDigest.hash}\n`].map((t) => new TextEncoder().encode(t));
    const all = [...blobs, { digest: actionDigest, data: action }, ...(await Promise.all(outputs.map(async (data) => ({ digest: await digestOf(data), data }))))];
    for (const t of tenants) await t.cas.batchUpdateBlobs({ requests: all });
    return actionDigest;
  }

  it("keeps operations to their tenant, refuses read-only keys Execute and cancel, and never hands the runner the caller's key", async () => {
    const acme = as(ACME);
    const reader = as(ACME_RO);
    const other = as(OTHER);
    const instanceName = instanceFor("sleep-1000");
    const actionDigest = await actionIn(acme);

    expect((await errorOf(drain(reader.exec.execute({ instanceName, actionDigest })))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(drain(exec.execute({ instanceName, actionDigest })))).code).toBe(Code.Unauthenticated);
    // Another tenant does not see acme's blobs.
    expect((await errorOf(drain(other.exec.execute({ instanceName, actionDigest })))).code).toBe(Code.FailedPrecondition);

    const { first, rest } = await firstOf(acme.exec.execute({ instanceName, actionDigest }));
    const name = first.name;
    expect((await reader.ops.getOperation({ name })).name).toBe(name);
    expect((await errorOf(other.ops.getOperation({ name }))).code).toBe(Code.NotFound);
    expect((await errorOf(drain(other.exec.waitExecution({ name })))).code).toBe(Code.NotFound);
    expect((await errorOf(other.ops.cancelOperation({ name }))).code).toBe(Code.NotFound);
    expect((await errorOf(other.ops.deleteOperation({ name }))).code).toBe(Code.NotFound);
    // A key of another tenant whose instances do not cover this one's, read-only: still NOT_FOUND,
    // never the PERMISSION_DENIED that would tell it the operation exists.
    const narrow = as(OTHER_NARROW);
    for (const call of [() => narrow.ops.getOperation({ name }), () => narrow.ops.cancelOperation({ name }), () => drain(narrow.exec.waitExecution({ name }))]) {
      expect((await errorOf(call())).code).toBe(Code.NotFound);
    }
    await indexed(name);
    expect((await other.ops.listOperations({ name: "operations", filter: `instance_name=${instanceName}` })).operations).toEqual([]);
    expect((await errorOf(reader.ops.cancelOperation({ name }))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(reader.ops.deleteOperation({ name }))).code).toBe(Code.PermissionDenied);
    expect((await reader.ops.listOperations({ name: "operations", filter: `instance_name=${instanceName}` })).operations.map((o) => o.name)).toEqual([name]);

    const done = (await rest).at(-1)!;
    expect(responseOf(done).status?.code ?? 0).toBe(0);
    const [attempt] = runs({ operation: name }).attempts;
    // The runner got a lease token of its own, scoped to this operation's instance, not the key.
    expect(attempt!.token).toMatch(/^kiln1\./);
    expect(attempt!.token).not.toContain(ACME);
    expect(responseOf(done).result?.executionMetadata?.worker).toContain("runner key");
  });

  it("never merges identical actions of two tenants: each runs in its own operation, with its own result in its own action cache", async () => {
    const acme = as(ACME);
    const other = as(OTHER);
    const instanceName = instanceFor("sleep-1000");
    // The same action, byte for byte, in both tenants' CAS.
    const actionDigest = await actionIn(acme, other);

    const a = await firstOf(acme.exec.execute({ instanceName, actionDigest }));
    const b = await firstOf(other.exec.execute({ instanceName, actionDigest }));
    expect(b.first.name).not.toBe(a.first.name);
    // Each tenant follows its own operation, and cancelling acme's does not end other's.
    expect((await errorOf(other.ops.getOperation({ name: a.first.name }))).code).toBe(Code.NotFound);
    await acme.ops.cancelOperation({ name: a.first.name });
    expect(responseOf((await a.rest).at(-1)!).status?.code).toBe(Code.Canceled);
    const done = (await b.rest).at(-1)!;
    expect(done.name).toBe(b.first.name);
    expect(responseOf(done).status?.code ?? 0).toBe(0);
    expect(runs({ action: actionDigest.hash }).attempts.map((x) => x.operation).sort()).toEqual([a.first.name, b.first.name].sort());
    expect(await other.ac.getActionResult({ instanceName, actionDigest })).toBeDefined();
  });
});

describe("Operations conformance", { timeout: 30_000 }, () => {
  it("WaitOperation with a zero timeout returns the latest state at once, for a finished and a running operation", async () => {
    const a = await newAction("ok");
    const name = (await executeAll(a)).at(-1)!.name;
    const done = await ops.waitOperation({ name, timeout: { seconds: 0n } });
    expect(done.done).toBe(true);
    const slow = await newAction("sleep-1500");
    const { first, rest } = await firstOf(exec.execute(request(slow)));
    const now = await ops.waitOperation({ name: first.name, timeout: { seconds: 0n } });
    expect(now.name).toBe(first.name);
    expect(now.done).toBe(false);
    await rest;
  });

  it("an Execute answered from the action cache names an operation GetOperation and WaitExecution find", async () => {
    const a = await newAction("ok");
    await executeAll(a);
    const hit = (await executeAll(a)).at(-1)!;
    expect(responseOf(hit).cachedResult).toBe(true);
    expect((await ops.getOperation({ name: hit.name })).done).toBe(true);
    expect(responseOf((await drain(exec.waitExecution({ name: hit.name }))).at(-1)!).cachedResult).toBe(true);
  });

  it("a do_not_cache action is run even when the action cache holds a result for its digest", async () => {
    const a = await newAction("ok", { doNotCache: true });
    await ac.updateActionResult({ instanceName: a.instanceName, actionDigest: a.digest, actionResult: { exitCode: 0 } });
    const res = responseOf((await executeAll(a)).at(-1)!);
    expect(res.cachedResult).toBe(false);
    expect(runs({ action: a.hash }).attempts).toHaveLength(1);
  });

  it("ListOperations accepts {instance_name}/operations as its name (a filter), and keeps to the key's instance prefixes", async () => {
    const a = await newAction("ok");
    const name = (await executeAll(a)).at(-1)!.name;
    await indexed(name);
    expect((await ops.listOperations({ name: `${a.instanceName}/operations` })).operations.map((o) => o.name)).toEqual([name]);
    expect((await ops.listOperations({ name: `${a.instanceName}/nothing/operations` })).operations).toEqual([]);
    expect((await errorOf(ops.listOperations({ name: "bogus" }))).code).toBe(Code.InvalidArgument);
    const key = "prefix-key-0123456789abcdef0123456789abcdef";
    env.API_KEYS = JSON.stringify([{ key, instances: ["elsewhere"], access: "read-write", name: "narrow" }]);
    try {
      const narrow = grpcWebClient(Operations, { authorization: `Bearer ${key}` });
      expect((await narrow.listOperations({ name: "operations", filter: `instance_name=${a.instanceName}` })).operations).toEqual([]);
    } finally {
      delete env.API_KEYS;
    }
  });
});

describe("Operations of one build", { timeout: 30_000 }, () => {
  it("keeps RequestMetadata.tool_invocation_id: ListOperations filters by it (the join key to the build's invocation)", async () => {
    const { toBinary: bin, create: mk } = await import("@bufbuild/protobuf");
    const { base64Encode } = await import("@bufbuild/protobuf/wire");
    const { RequestMetadataSchema } = await import("../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts");
    const invocation = crypto.randomUUID();
    const header = base64Encode(bin(RequestMetadataSchema, mk(RequestMetadataSchema, { toolInvocationId: invocation, targetId: "//pkg:t", actionMnemonic: "Genrule" })));
    const bazelExec = grpcWebClient(Execution, { "build.bazel.remote.execution.v2.requestmetadata-bin": header });
    const [a, b] = [await newAction("ok"), await newAction("ok")];
    const named = (await drain(bazelExec.execute(request(a)))).at(-1)!.name;
    const other = (await executeAll(b)).at(-1)!.name;
    await indexed(named, other);
    const listed = await ops.listOperations({ name: "operations", filter: `tool_invocation_id=${invocation}` });
    expect(listed.operations.map((o) => o.name)).toEqual([named]);
  });
});

describe("Operations in open mode on a public address", { timeout: 30_000 }, () => {
  // vitest.config.mts sets ALLOW_OPEN for the other tests; without it, a keyless Kiln reached on a
  // public host (the test clients call http://kiln/...) serves reads only, and that holds for the
  // Operations and Execution methods that judge their caller from the operation's owner too.
  it("GetOperation, ListOperations and WaitExecution still answer; CancelOperation and DeleteOperation are PERMISSION_DENIED saying what to set", async () => {
    const a = await newAction("ok");
    const name = (await executeAll(a)).at(-1)!.name;
    await indexed(name);
    const saved = env.ALLOW_OPEN;
    delete env.ALLOW_OPEN;
    try {
      expect((await ops.getOperation({ name })).done).toBe(true);
      expect((await ops.listOperations({ name: "operations", filter: `instance_name=${a.instanceName}` })).operations.map((o) => o.name)).toEqual([name]);
      expect((await drain(exec.waitExecution({ name }))).at(-1)!.done).toBe(true);
      for (const refused of [() => ops.cancelOperation({ name }), () => ops.deleteOperation({ name })]) {
        const e = await errorOf(refused());
        expect(e.code).toBe(Code.PermissionDenied);
        expect(e.rawMessage).toMatch(/ALLOW_OPEN=true/);
      }
    } finally {
      env.ALLOW_OPEN = saved;
    }
    // Nothing was cancelled or deleted.
    expect((await ops.getOperation({ name })).name).toBe(name);
  });
});
