// Remote execution, worker side: what Execute checks, and how runs go (stages, action cache,
// merging, priority, cancellation, runner failures). Actions are "run" by a scripted runner that
// dials the pool (fake-runner.ts); the instance name picks its behaviour: "exec/<behaviour>/<unique>".
import { create, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { env } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import {
  ActionSchema,
  Capabilities,
  CommandSchema,
  DirectorySchema,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { MAX_ATTEMPTS } from "../../durable-objects/runner-pool.ts";
import { MAX_MISSING_VIOLATIONS } from "../../src/shared/status.ts";
import { EMPTY_SHA256 } from "../../src/storage/digest.ts";
import { scrape } from "./metrics-helpers.ts";

const EMPTY_DIGEST = { hash: EMPTY_SHA256, sizeBytes: 0n };
import { digestOf, errorOf, grpcWebClient } from "./helpers.ts";
import {
  ac,
  CAPACITY,
  COMPLETED,
  drain,
  EXECUTING,
  exec,
  executeAll,
  firstOf,
  indexed,
  instanceFor,
  newAction,
  ops,
  QUEUED,
  request,
  responseOf,
  runningOn,
  runs,
  sharedRunner,
  stageOf,
  upload,
  waitFor,
  type TestAction,
} from "./execution-helpers.ts";

beforeAll(async () => {
  await sharedRunner();
});

describe("Execute: checks before an operation exists", { timeout: 30_000 }, () => {
  it("refuses a missing Action with FAILED_PRECONDITION and one MISSING violation blobs/{hash}/{size}", async () => {
    const digest = await digestOf(`no such action ${crypto.randomUUID()}`);
    const err = await errorOf(drain(exec.execute({ instanceName: instanceFor("ok"), actionDigest: digest })));
    expect(err.code).toBe(Code.FailedPrecondition);
    const [pf] = err.findDetails(PreconditionFailureSchema);
    expect(pf?.violations.map((v) => [v.type, v.subject])).toEqual([["MISSING", `blobs/${digest.hash}/${digest.sizeBytes}`]]);
  });

  it("names every missing blob: the Command, input files and input directories, one violation each", async () => {
    const command = await digestOf(`missing command ${crypto.randomUUID()}`);
    const file1 = await digestOf(`missing file 1 ${crypto.randomUUID()}`);
    const file2 = await digestOf(`missing file 2 ${crypto.randomUUID()}`);
    const subdir = await digestOf(`missing subdirectory ${crypto.randomUUID()}`);
    const [present] = await upload(`present ${crypto.randomUUID()}`);
    const root = toBinary(
      DirectorySchema,
      create(DirectorySchema, {
        files: [
          { name: "a", digest: file1 },
          { name: "b", digest: present },
          { name: "c", digest: file2 },
        ],
        directories: [{ name: "d", digest: subdir }],
      }),
    );
    const [rootDigest] = await upload(root);
    const [action] = await upload(toBinary(ActionSchema, create(ActionSchema, { commandDigest: command, inputRootDigest: rootDigest })));
    const err = await errorOf(drain(exec.execute({ instanceName: instanceFor("ok"), actionDigest: action })));
    expect(err.code).toBe(Code.FailedPrecondition);
    const subjects = err.findDetails(PreconditionFailureSchema).flatMap((pf) => pf.violations.map((v) => (expect(v.type).toBe("MISSING"), v.subject)));
    expect(subjects.sort()).toEqual([command, file1, file2, subdir].map((d) => `blobs/${d.hash}/${d.sizeBytes}`).sort());
  });

  it("lists at most MAX_MISSING_VIOLATIONS missing blobs (the details must fit grpc-java's 8 KiB of metadata), saying how many are missing", async () => {
    const files = await Promise.all(Array.from({ length: 100 }, (_, i) => digestOf(`missing input ${i} ${crypto.randomUUID()}`)));
    const root = toBinary(DirectorySchema, create(DirectorySchema, { files: files.map((digest, i) => ({ name: `f${String(i).padStart(3, "0")}`, digest })) }));
    const [rootDigest] = await upload(root);
    const [command] = await upload(toBinary(CommandSchema, create(CommandSchema, { arguments: ["true", crypto.randomUUID()] })));
    const [action] = await upload(toBinary(ActionSchema, create(ActionSchema, { commandDigest: command, inputRootDigest: rootDigest })));
    const err = await errorOf(drain(exec.execute({ instanceName: instanceFor("ok"), actionDigest: action })));
    expect([err.code, err.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringContaining(`the first ${MAX_MISSING_VIOLATIONS} of 100 listed`)]);
    const violations = err.findDetails(PreconditionFailureSchema).flatMap((pf) => pf.violations);
    expect(violations).toHaveLength(MAX_MISSING_VIOLATIONS);
    const wanted = new Set(files.map((d) => `blobs/${d.hash}/${d.sizeBytes}`));
    expect(violations.every((v) => v.type === "MISSING" && wanted.has(v.subject))).toBe(true);
    // What grpc-status-details-bin carries, base64: well inside 8 KiB with the other metadata.
    const details = toBinary(PreconditionFailureSchema, create(PreconditionFailureSchema, { violations }));
    expect(Math.ceil(details.byteLength / 3) * 4).toBeLessThan(6 * 1024);
  });

  it("walks the input tree a level at a time, its small Directories one index call per shard, not one each", async () => {
    const children = Array.from({ length: 300 }, (_, i) => toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: `f${i}`, digest: EMPTY_DIGEST }] })));
    const childDigests = await upload(...children);
    const root = toBinary(DirectorySchema, create(DirectorySchema, { directories: childDigests.map((digest, i) => ({ name: `d${String(i).padStart(3, "0")}`, digest })) }));
    const [rootDigest] = await upload(root);
    // The Command is missing, so Execute ends once the walk is done: FAILED_PRECONDITION naming it.
    const command = await digestOf(toBinary(CommandSchema, create(CommandSchema, { arguments: ["true", crypto.randomUUID()] })));
    const [action] = await upload(toBinary(ActionSchema, create(ActionSchema, { commandDigest: command, inputRootDigest: rootDigest })));
    const calls = (m: Map<string, number>, method: string) =>
      [...m].filter(([k]) => k.startsWith("kiln_do_requests_total{") && k.includes('object="CAS_INDEX"') && k.includes(`method="${method}"`)).reduce((n, [, v]) => n + v, 0);
    const before = await scrape();
    const err = await errorOf(drain(exec.execute({ instanceName: instanceFor("ok"), actionDigest: action })));
    const after = await scrape();
    expect(err.findDetails(PreconditionFailureSchema).flatMap((pf) => pf.violations.map((v) => v.subject))).toEqual([`blobs/${command.hash}/${command.sizeBytes}`]);
    // The Action and the Command one call each; the root one batch, its 300 children one more.
    expect(calls(after, "smallBlob") - calls(before, "smallBlob")).toBeLessThanOrEqual(2);
    expect(calls(after, "smallBlobs") - calls(before, "smallBlobs")).toBeLessThanOrEqual(1 + 16);
  });

  it("refuses what the runner could not run, at Execute and before anything is queued: INVALID_ARGUMENT naming it", async () => {
    type Fields = { arguments: string[]; outputPaths?: string[]; outputFiles?: string[]; environmentVariables?: { name: string; value: string }[]; workingDirectory?: string };
    const cases: [string, Fields, RegExp][] = [
      ["an output path out of the working directory", { arguments: ["true"], outputPaths: ["../x"] }, /output path "..\/x"/],
      ["an absolute output file", { arguments: ["true"], outputFiles: ["/etc/passwd"] }, /output file "\/etc\/passwd" must be relative/],
      ["an environment variable without a name", { arguments: ["true"], environmentVariables: [{ name: "A=B", value: "c" }] }, /environment variable "A=B"/],
      ["an empty program", { arguments: [""] }, /no arguments/],
      ["a working directory out of the input root", { arguments: ["true"], workingDirectory: "../up" }, /working_directory "..\/up"/],
    ];
    for (const [what, fields, says] of cases) {
      const [command] = await upload(toBinary(CommandSchema, create(CommandSchema, { ...fields, environmentVariables: [...(fields.environmentVariables ?? []), { name: "NONCE", value: crypto.randomUUID() }] })));
      const [root] = await upload(toBinary(DirectorySchema, create(DirectorySchema, {})));
      const [action] = await upload(toBinary(ActionSchema, create(ActionSchema, { commandDigest: command, inputRootDigest: root })));
      const err = await errorOf(drain(exec.execute({ instanceName: instanceFor("ok"), actionDigest: action })));
      expect([err.code, err.rawMessage], what).toEqual([Code.InvalidArgument, expect.stringMatching(says)]);
      expect(runs({ action: action!.hash }).attempts, what).toHaveLength(0);
    }
    // An input Directory naming one entry twice.
    const [file] = await upload(`input ${crypto.randomUUID()}`);
    const [root] = await upload(toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: "a", digest: file }, { name: "a", digest: file }] })));
    const [command] = await upload(toBinary(CommandSchema, create(CommandSchema, { arguments: ["true", crypto.randomUUID()] })));
    const [action] = await upload(toBinary(ActionSchema, create(ActionSchema, { commandDigest: command, inputRootDigest: root })));
    const err = await errorOf(drain(exec.execute({ instanceName: instanceFor("ok"), actionDigest: action })));
    expect([err.code, err.rawMessage]).toEqual([Code.InvalidArgument, expect.stringContaining('two entries named "a"')]);
  });

  it("refuses an Action.timeout over the maximum (6 h by default: no platform ceiling) with INVALID_ARGUMENT, and accepts exactly 6 h", async () => {
    const over = await newAction("ok", { timeoutSeconds: 6 * 3600 + 1 });
    expect((await errorOf(executeAll(over))).code).toBe(Code.InvalidArgument);
    expect((runs({ action: over.hash })).attempts).toHaveLength(0);

    const max = await newAction("ok", { timeoutSeconds: 6 * 3600 });
    const done = await executeAll(max);
    expect(responseOf(done.at(-1)!).status?.code ?? 0).toBe(0);
    expect((runs({ action: max.hash })).attempts.map((a) => a.timeoutMs)).toEqual([6 * 3600_000]);
  });

  it("refuses a platform property no runner offers with FAILED_PRECONDITION naming it; a property offered with several values matches each", async () => {
    const windows = await newAction("ok", { platform: [["OSFamily", "windows"]] });
    const err = await errorOf(executeAll(windows));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain("OSFamily=windows");

    const gpu = await newAction("ok", { platform: [["OSFamily", "linux"], ["gpu", "a100"]] });
    const err2 = await errorOf(executeAll(gpu));
    expect(err2.code).toBe(Code.FailedPrecondition);
    expect(err2.rawMessage).toContain("gpu=a100");
    expect((runs({ action: gpu.hash })).attempts).toHaveLength(0);

    // The runner offers arch x86_64 and arm64: an action may ask for either, or (repeated) both.
    const avx = await newAction("ok", { platform: [["arch", "x86_64"], ["arch", "arm64"], ["OSFamily", "linux"]] });
    expect(responseOf((await executeAll(avx)).at(-1)!).result?.exitCode).toBe(0);
  });
});

describe("Execute: runs", { timeout: 30_000 }, () => {
  it("streams QUEUED/EXECUTING/COMPLETED, caches the result, serves it as cached_result, and skip_cache_lookup runs again", async () => {
    const a = await newAction("sleep-300");
    const stream = await executeAll(a);
    const stages = stream.map(stageOf);
    // The stream starts with the current stage (QUEUED, or already EXECUTING), never goes back, ends COMPLETED.
    expect(stages).toContain(EXECUTING);
    expect([QUEUED, EXECUTING]).toContain(stages[0]);
    expect([...stages].sort((x, y) => x - y)).toEqual(stages);
    expect(stages.at(-1)).toBe(COMPLETED);
    expect(new Set(stream.map((op) => op.name)).size).toBe(1);
    const res = responseOf(stream.at(-1)!);
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.cachedResult).toBe(false);
    expect(res.result?.exitCode).toBe(0);
    expect(res.result?.stdoutDigest?.hash).toBe((await digestOf(`stdout of ${a.hash}\n`)).hash);
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["ok"]);

    // The action cache now has it.
    const hit = await ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest });
    expect(hit.outputFiles.map((f) => f.path)).toEqual(["out"]);

    // A second Execute is served from the cache: one COMPLETED operation, no run.
    const again = await executeAll(a);
    expect(again).toHaveLength(1);
    expect(stageOf(again[0]!)).toBe(COMPLETED);
    const cached = responseOf(again[0]!);
    expect(cached.cachedResult).toBe(true);
    expect(cached.result?.exitCode).toBe(0);
    expect((runs({ action: a.hash })).attempts).toHaveLength(1);

    // Inlining asked for on Execute applies to the cached result.
    const inlined = responseOf((await executeAll(a, { inlineStdout: true })).at(-1)!);
    expect(new TextDecoder().decode(inlined.result?.stdoutRaw)).toBe(`stdout of ${a.hash}\n`);

    // An entry holding stdout inline (a client uploaded it so) answers Execute, GetOperation and
    // WaitExecution without it unless the Execute asks.
    await ac.updateActionResult({ instanceName: a.instanceName, actionDigest: a.digest, actionResult: { ...hit, stdoutRaw: new TextEncoder().encode(`stdout of ${a.hash}\n`) } });
    const plain = (await executeAll(a)).at(-1)!;
    expect(responseOf(plain).result?.stdoutRaw.byteLength).toBe(0);
    expect(responseOf(await ops.getOperation({ name: plain.name })).result?.stdoutRaw.byteLength).toBe(0);
    expect(responseOf((await drain(exec.waitExecution({ name: plain.name }))).at(-1)!).result?.stdoutRaw.byteLength).toBe(0);
    const asked = responseOf((await executeAll(a, { inlineStdout: true })).at(-1)!);
    expect(new TextDecoder().decode(asked.result?.stdoutRaw)).toBe(`stdout of ${a.hash}\n`);

    // skip_cache_lookup runs it again, and the fresh result is not marked cached.
    const fresh = await executeAll(a, { skipCacheLookup: true });
    expect(responseOf(fresh.at(-1)!).cachedResult).toBe(false);
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["ok", "ok"]);
  });

  it("does not cache a non-zero exit code: it is a result (status OK), and the next Execute runs again", async () => {
    const a = await newAction("exit-1");
    const res = responseOf((await executeAll(a)).at(-1)!);
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.result?.exitCode).toBe(1);
    expect((await errorOf(ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest }))).code).toBe(Code.NotFound);
    expect(responseOf((await executeAll(a)).at(-1)!).cachedResult).toBe(false);
    expect((runs({ action: a.hash })).attempts).toHaveLength(2);
  });

  it("honours do_not_cache: not cached, and two concurrent identical Executes are not merged", async () => {
    const a = await newAction("sleep-500", { doNotCache: true });
    const [one, two] = await Promise.all([executeAll(a), executeAll(a)]);
    expect(one.at(-1)!.name).not.toBe(two.at(-1)!.name);
    for (const s of [one, two]) expect(responseOf(s.at(-1)!).result?.exitCode).toBe(0);
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["ok", "ok"]);
    expect((await errorOf(ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest }))).code).toBe(Code.NotFound);
    // And a later Execute runs it again rather than answering from a cache.
    expect(responseOf((await executeAll(a)).at(-1)!).cachedResult).toBe(false);
    expect((runs({ action: a.hash })).attempts).toHaveLength(3);
  });

  it("merges 24 concurrent identical Executes into exactly one run", async () => {
    const a = await newAction("sleep-1500");
    const streams = await Promise.all(Array.from({ length: 24 }, () => executeAll(a)));
    const names = new Set<string>();
    for (const s of streams) {
      const res = responseOf(s.at(-1)!);
      expect(res.status?.code ?? 0).toBe(0);
      expect(res.result?.exitCode).toBe(0);
      if (!res.cachedResult) names.add(s.at(-1)!.name);
    }
    expect(names.size).toBe(1);
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["ok"]);
  });

  it("starts a later-queued priority -5 action before an earlier priority 5 one when runners are full", async () => {
    const instanceName = instanceFor("sleep-2000");
    const fill = await Promise.all(Array.from({ length: CAPACITY }, () => newAction("", { instanceName })));
    const low = await newAction("", { instanceName });
    const high = await newAction("", { instanceName });
    const fillers = await Promise.all(fill.map((a) => firstOf(exec.execute(request(a)))));
    await runningOn(instanceName, CAPACITY);

    const late5 = await firstOf(exec.execute(request(low, { executionPolicy: { priority: 5 } })));
    expect(stageOf(late5.first)).toBe(QUEUED);
    const late_5 = await firstOf(exec.execute(request(high, { executionPolicy: { priority: -5 } })));
    expect(stageOf(late_5.first)).toBe(QUEUED);

    for (const s of [...fillers, late5, late_5]) expect((await s.rest).at(-1)!.done).toBe(true);
    // Followed from the start, a queued operation streams exactly QUEUED, EXECUTING, COMPLETED.
    for (const s of [late5, late_5]) expect((await s.rest).map(stageOf)).toEqual([QUEUED, EXECUTING, COMPLETED]);
    const { attempts, maxConcurrent } = await runs({ instance: instanceName });
    const startOf = (t: TestAction) => attempts.find((x) => x.actionHash === t.hash)!.seq;
    expect(startOf(high)).toBeLessThan(startOf(low));
    expect(attempts.map((x) => x.outcome)).toEqual(["ok", "ok", "ok", "ok"]);
    // The scheduler never ran more at once than the runner's capacity.
    expect(maxConcurrent).toBe(CAPACITY);
  });

  it("cancels a running action: CancelOperation kills it on the runner and the operation completes CANCELLED", async () => {
    const a = await newAction("sleep-20000");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    await runningOn(a.instanceName, 1);
    await ops.cancelOperation({ name: first.name });
    const stream = await rest;
    const last = stream.at(-1)!;
    expect(last.done).toBe(true);
    expect(last.result.case).toBe("response"); // not Operation.error
    const res = responseOf(last);
    expect(res.status?.code).toBe(Code.Canceled);
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["cancelled"]);
    expect((await errorOf(ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest }))).code).toBe(Code.NotFound);
    // Cancelling again is harmless; the operation stays readable and done.
    await ops.cancelOperation({ name: first.name });
    expect((await ops.getOperation({ name: first.name })).done).toBe(true);
    expect((await errorOf(ops.cancelOperation({ name: `operations/${crypto.randomUUID()}` }))).code).toBe(Code.NotFound);
  });

  it("an Execute of an action whose cancellation is under way runs it anew instead of joining the cancelled operation", async () => {
    // The runner goes silent on each operation's first attempt, so a cancel stays unconfirmed
    // (and the operation in the queue) until the lease lapses.
    const a = await newAction("busy-0+lost-1");
    const first = await firstOf(exec.execute(request(a)));
    await waitFor("the first attempt", async () => runs({ action: a.hash }).attempts.length === 1);
    await ops.cancelOperation({ name: first.first.name });
    const second = await firstOf(exec.execute(request(a)));
    expect(second.first.name).not.toBe(first.first.name);
    expect(responseOf((await first.rest).at(-1)!).status?.code).toBe(Code.Canceled);
    const res = responseOf((await second.rest).at(-1)!);
    expect([res.status?.code ?? 0, res.result?.exitCode]).toEqual([0, 0]);
  });

  it("cancels a queued action: it completes CANCELLED at once and never reaches a runner", async () => {
    const instanceName = instanceFor("sleep-20000");
    const fill = await Promise.all(Array.from({ length: CAPACITY }, () => newAction("", { instanceName })));
    const fillers = await Promise.all(fill.map((a) => firstOf(exec.execute(request(a)))));
    await runningOn(instanceName, CAPACITY);
    const queued = await newAction("", { instanceName });
    const q = await firstOf(exec.execute(request(queued)));
    expect(stageOf(q.first)).toBe(QUEUED);
    await ops.cancelOperation({ name: q.first.name });
    const qs = await q.rest;
    expect(responseOf(qs.at(-1)!).status?.code).toBe(Code.Canceled);
    expect(qs.map(stageOf)).not.toContain(EXECUTING);

    for (const f of fillers) await ops.cancelOperation({ name: f.first.name });
    for (const f of fillers) expect(responseOf((await f.rest).at(-1)!).status?.code).toBe(Code.Canceled);
    const { attempts } = await runs({ instance: instanceName });
    expect(attempts.map((x) => x.outcome)).toEqual(["cancelled", "cancelled"]);
    expect(attempts.find((x) => x.actionHash === queued.hash)).toBeUndefined();
  });

  it("surfaces DEADLINE_EXCEEDED from the runner in ExecuteResponse.status, keeping the result's stdout, uncached", async () => {
    const a = await newAction("timeout", { timeoutSeconds: 1 });
    const res = responseOf((await executeAll(a)).at(-1)!);
    expect(res.status?.code).toBe(Code.DeadlineExceeded);
    expect(res.result?.stdoutDigest?.hash).toBe((await digestOf(`stdout of ${a.hash}\n`)).hash);
    expect((runs({ action: a.hash })).attempts.map((x) => [x.outcome, x.timeoutMs])).toEqual([["deadline", 1000]]);
    expect((await errorOf(ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest }))).code).toBe(Code.NotFound);
  });

  it("gives up on a runner that keeps being lost: after bounded retries the operation completes UNAVAILABLE, for every waiter", async () => {
    const a = await newAction("lost");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    const waiter = drain(exec.waitExecution({ name: first.name }));
    const [s1, s2] = await Promise.all([rest, waiter]);
    for (const s of [s1, s2]) {
      const res = responseOf(s.at(-1)!);
      expect(res.status?.code).toBe(Code.Unavailable);
      expect(res.message).not.toBe("");
    }
    const outcomes = (runs({ action: a.hash })).attempts.map((x) => x.outcome);
    expect(outcomes).toEqual(Array(MAX_ATTEMPTS).fill("lost"));
  });

  it("offers an action again when a runner refuses it (all slots busy); it stays QUEUED until one accepts", async () => {
    const a = await newAction("busy-2");
    const stream = await executeAll(a);
    // A refusal is not a start: clients see QUEUED, then EXECUTING once a runner accepted.
    expect(stream.map(stageOf)).toEqual([QUEUED, EXECUTING, COMPLETED]);
    const res = responseOf(stream.at(-1)!);
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.result?.exitCode).toBe(0);
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["busy", "busy", "ok"]);
  });

  it("puts an operation whose runner was lost back in QUEUED; cancelling it there completes it without another run", async () => {
    const a = await newAction("lost");
    const { first, rest } = await firstOf(exec.execute(request(a)));
    await waitFor("the first attempt to be lost", async () => (runs({ action: a.hash })).attempts[0]?.outcome === "lost");
    // Once the lease expires the operation is queued again (and waits 2 s before it is offered):
    // it is listed as QUEUED meanwhile.
    await waitFor("QUEUED", async () => stageOf(await ops.getOperation({ name: first.name })) === QUEUED, 6000);
    await indexed(first.name);
    const listed = await ops.listOperations({ name: "operations", filter: `instance_name=${a.instanceName} AND stage=QUEUED` });
    expect(listed.operations.map((o) => o.name)).toEqual([first.name]);
    await ops.cancelOperation({ name: first.name });
    const stream = await rest;
    expect(responseOf(stream.at(-1)!).status?.code).toBe(Code.Canceled);
    await new Promise((r) => setTimeout(r, 2500)); // past the retry time
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["lost"]);
  });

  it("does not count refusals as lost runners", async () => {
    const a = await newAction("busy-2+lost-1");
    const res = responseOf((await executeAll(a)).at(-1)!);
    expect(res.status?.code ?? 0).toBe(0);
    expect((runs({ action: a.hash })).attempts.map((x) => x.outcome)).toEqual(["busy", "busy", "lost", "ok"]);
  });

  it("reports a runner's FAILED_PRECONDITION result (outputs not collected) with the runner's message, uncached", async () => {
    const a = await newAction("bad-output");
    const res = responseOf((await executeAll(a)).at(-1)!);
    expect(res.status?.code).toBe(Code.FailedPrecondition);
    expect(res.status?.message).toContain("output file out is a directory");
    expect(res.message).toContain("output file out is a directory");
    expect(res.result?.stdoutDigest?.hash).toBe((await digestOf(`stdout of ${a.hash}\n`)).hash);
    expect((await errorOf(ac.getActionResult({ instanceName: a.instanceName, actionDigest: a.digest }))).code).toBe(Code.NotFound);
  });

  it("passes on a runner's FAILED_PRECONDITION with its MISSING violations, so clients re-upload", async () => {
    const a = await newAction("reject-412");
    const res = responseOf((await executeAll(a)).at(-1)!);
    expect(res.status?.code).toBe(Code.FailedPrecondition);
    const violations = res.status!.details.flatMap((d) => anyUnpack(d, PreconditionFailureSchema)?.violations ?? []);
    expect(violations.map((v) => v.type)).toEqual(["MISSING"]);
    expect(violations[0]!.subject).toMatch(/^blobs\/[0-9a-f]{64}\/8$/);
  });
});

describe("Execute: executors", { timeout: 30_000 }, () => {
  it("answers FAILED_PRECONDITION when no runner can connect (no RUNNER_KEYS, no containers); Capabilities says so", async () => {
    const saved = { keys: env.RUNNER_KEYS, containers: env.RUNNER_CONTAINERS };
    const caps = grpcWebClient(Capabilities);
    expect((await caps.getCapabilities({ instanceName: "" })).executionCapabilities?.execEnabled).toBe(true);
    const a = await newAction("ok");
    try {
      env.RUNNER_KEYS = "";
      env.RUNNER_CONTAINERS = "0";
      expect((await errorOf(executeAll(a))).code).toBe(Code.FailedPrecondition);
      expect((await caps.getCapabilities({ instanceName: "" })).executionCapabilities?.execEnabled).toBe(false);
    } finally {
      env.RUNNER_KEYS = saved.keys;
      env.RUNNER_CONTAINERS = saved.containers;
    }
    expect(runs({ action: a.hash }).attempts).toHaveLength(0);
    expect(responseOf((await executeAll(a)).at(-1)!).result?.exitCode).toBe(0);
  });
});
