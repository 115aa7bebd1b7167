// ResultStore v2 through the real stack: grpc-js through the bridge and fetch over REST, then the
// load test: 5,000 targets x 2 configured targets x 1 action uploaded by a separate process in
// 10 MiB UploadBatch calls, killed midway, resumed from GetInvocationUploadMetadata by a new
// process, and read back page by page: nothing lost, nothing doubled.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, CONFIGS, FILES_PER_ACTION, fileUri, listAll, resultStoreClients, targetId, token, type RsClient } from "./resultstore-load.ts";
import { startStack, type Stack } from "./stack.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TARGETS = 5_000;

let stack: Stack;
let upload: RsClient;
let download: RsClient;
let close: () => void;

beforeAll(async () => {
  stack = await startStack();
  ({ upload, download, close } = resultStoreClients(stack.grpcTarget));
}, 120_000);
afterAll(async () => {
  close?.();
  await stack?.stop();
});

const codeOf = async (p: Promise<unknown>) => {
  try {
    await p;
    return "OK";
  } catch (e) {
    return (e as { code?: number; details?: string }).code;
  }
};
const GRPC = { INVALID_ARGUMENT: 3, NOT_FOUND: 5, PERMISSION_DENIED: 7, FAILED_PRECONDITION: 9, ABORTED: 10 };

describe("ResultStore over native gRPC (bridge)", () => {
  it("creates, uploads, finalizes and reads back with masks; tokens and request ids hold", async () => {
    const id = randomUUID();
    const tok = randomUUID();
    const inv = await call(upload, "CreateInvocation", { invocation_id: id, authorization_token: tok, request_id: "req-1", invocation: { invocation_attributes: { users: ["grpc-user"] } } });
    expect(inv.name).toBe(`invocations/${id}`);
    // Upload RPCs answer name and id only.
    expect(inv.invocation_attributes).toBeNull();
    // The same request id again: answered as before, nothing new.
    expect((await call(upload, "CreateInvocation", { invocation_id: id, authorization_token: tok, request_id: "req-1", invocation: {} })).name).toBe(inv.name);
    expect(await codeOf(call(upload, "CreateInvocation", { invocation_id: id, authorization_token: tok, invocation: {} }))).not.toBe("OK");
    expect(await codeOf(call(upload, "CreateTarget", { parent: inv.name, target_id: "//a:b", target: {}, authorization_token: randomUUID() }))).toBe(GRPC.PERMISSION_DENIED);
    const t = await call(upload, "CreateTarget", { parent: inv.name, target_id: "//a:b", target: { visible: true }, authorization_token: tok });
    // A configured target needs its configuration first.
    expect(await codeOf(call(upload, "CreateConfiguredTarget", { parent: t.name, config_id: "opt", configured_target: {}, authorization_token: tok }))).toBe(GRPC.NOT_FOUND);
    await call(upload, "CreateConfiguration", { parent: inv.name, config_id: "opt", configuration: { configuration_attributes: { cpu: "k8" } }, authorization_token: tok });
    const ct = await call(upload, "CreateConfiguredTarget", { parent: t.name, config_id: "opt", configured_target: {}, authorization_token: tok });
    await call(upload, "CreateAction", { parent: ct.name, action_id: "build", action: { files: [{ uid: "log", uri: "file:///log" }] }, authorization_token: tok });
    await call(upload, "MergeAction", {
      action: { name: `${ct.name}/actions/build`, files: [{ uid: "out", uri: "file:///out" }] },
      update_mask: { paths: ["files"] },
      authorization_token: tok,
    });
    await call(upload, "FinalizeInvocation", { name: inv.name, authorization_token: tok });
    expect(await codeOf(call(upload, "CreateTarget", { parent: inv.name, target_id: "//late", target: {}, authorization_token: tok }))).toBe(GRPC.FAILED_PRECONDITION);

    expect(await codeOf(call(download, "GetInvocation", { name: inv.name }))).toBe(GRPC.INVALID_ARGUMENT); // no mask
    const got = await call(download, "GetInvocation", { name: inv.name }, "invocation_attributes.users");
    expect(got.invocation_attributes.users).toEqual(["grpc-user"]);
    expect(got.name).toBe("");
    const actions = await call(download, "ListActions", { parent: `${inv.name}/targets/-/configuredTargets/-` }, "actions.files");
    expect(actions.actions[0].files.map((f: { uid: string }) => f.uid)).toEqual(["log", "out"]);
  });

  it("UploadBatch: replay is silent, a stale resume token is ABORTED", async () => {
    const id = randomUUID();
    const tok = randomUUID();
    const inv = await call(upload, "CreateInvocation", { invocation_id: id, authorization_token: tok, initial_resume_token: token(0), invocation: {} });
    const batch = { parent: inv.name, authorization_token: tok, resume_token: token(0), next_resume_token: token(1), upload_requests: [{ id: { target_id: "//x" }, upload_operation: "CREATE", target: {} }] };
    await call(upload, "UploadBatch", batch);
    await call(upload, "UploadBatch", batch); // replay: nothing applied twice
    expect(await codeOf(call(upload, "UploadBatch", { ...batch, next_resume_token: token(2) }))).toBe(GRPC.ABORTED);
    const targets = await call(download, "ListTargets", { parent: inv.name }, "targets.name");
    expect(targets.targets).toHaveLength(1);
  });
});

describe("ResultStore over REST (fetch)", () => {
  it("creates an invocation and a target, searches and lists with the fields parameter", async () => {
    const id = randomUUID();
    const tok = randomUUID();
    const label = `rest-${randomUUID()}`;
    const base = stack.httpUrl;
    const created = await fetch(`${base}/v2/invocations?invocationId=${id}&authorizationToken=${tok}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ invocationAttributes: { labels: [label] }, timing: { startTime: "2026-11-22T10:00:00Z" } }),
    });
    expect(created.status).toBe(200);
    expect(await created.json()).toEqual({ name: `invocations/${id}`, id: { invocationId: id } });
    const target = await fetch(`${base}/v2/invocations/${id}/targets?targetId=${encodeURIComponent("//r:t")}&authorizationToken=${tok}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ statusAttributes: { status: "PASSED" } }),
    });
    expect(target.status).toBe(200);
    const wrong = await fetch(`${base}/v2/invocations/${id}/targets?targetId=x&authorizationToken=${randomUUID()}`, { method: "POST", body: "{}" });
    expect(wrong.status).toBe(403);
    const search = await fetch(`${base}/v2/invocations:search?query=${encodeURIComponent(`invocation_attributes.labels:${label}`)}&fields=invocations.id`);
    expect(await search.json()).toEqual({ invocations: [{ id: { invocationId: id } }] });
    const cts = await fetch(`${base}/v2/invocations/${id}/targets?fields=targets.statusAttributes`);
    expect(await cts.json()).toEqual({ targets: [{ statusAttributes: { status: "PASSED" } }] });
    const noMask = await fetch(`${base}/v2/invocations/${id}`);
    expect(noMask.status).toBe(400);
    expect(((await noMask.json()) as { error: { message: string } }).error.message).toMatch(/field mask/);
  });
});

describe("ResultStore load: 5,000 targets, a killed uploader resumed", () => {
  it("uploads in 10 MiB batches, survives SIGKILL midway, reads everything back once", async () => {
    const id = randomUUID();
    const tok = randomUUID();
    const inv = await call(upload, "CreateInvocation", { invocation_id: id, authorization_token: tok, initial_resume_token: token(0), invocation: {} });
    const uploader = (kill: (line: string) => boolean) =>
      new Promise<{ code: number | null; signal: string | null; lines: string[] }>((resolve) => {
        const child = spawn(process.execPath, ["--import", "tsx", `${ROOT}test/e2e/resultstore-uploader.ts`, stack.grpcTarget, inv.name, tok, String(TARGETS)], {
          stdio: ["ignore", "pipe", "inherit"],
        });
        const lines: string[] = [];
        child.stdout.setEncoding("utf8").on("data", (s: string) => {
          for (const l of s.split("\n").filter(Boolean)) {
            lines.push(l);
            if (kill(l)) child.kill("SIGKILL");
          }
        });
        child.on("exit", (code, signal) => resolve({ code, signal, lines }));
      });
    // First process: killed right after its second acknowledged batch (a third may be in flight).
    const first = await uploader((l) => l.startsWith("batch 2 "));
    expect(first.signal).toBe("SIGKILL");
    const mid = await call(upload, "GetInvocationUploadMetadata", { name: `${inv.name}/uploadMetadata`, authorization_token: tok }, "resume_token,uploader_state");
    const resumedAt = Number(Buffer.from(mid.uploader_state).toString());
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThan(TARGETS);
    const second = await uploader(() => false);
    expect(second.code, second.lines.join("\n")).toBe(0);
    expect(second.lines.at(-1)).toMatch(/^done /);
    console.log(`[resultstore load] first process: ${first.lines.length} batches before SIGKILL; resumed at target ${resumedAt}; second: ${second.lines.join(" | ")}`);

    const targets = await listAll(download, "ListTargets", inv.name, "targets", "id,properties");
    const cts = await listAll(download, "ListConfiguredTargets", `${inv.name}/targets/-`, "configured_targets", "id");
    const actions = await listAll(download, "ListActions", `${inv.name}/targets/-/configuredTargets/-`, "actions", "id,files");
    expect(targets).toHaveLength(TARGETS);
    expect(cts).toHaveLength(TARGETS * CONFIGS.length);
    expect(actions).toHaveLength(TARGETS * CONFIGS.length);
    expect(new Set(targets.map((t) => t.id.target_id)).size).toBe(TARGETS);
    expect(new Set(cts.map((c) => `${c.id.target_id}/${c.id.configuration_id}`)).size).toBe(TARGETS * CONFIGS.length);
    const wantTargets = new Set(Array.from({ length: TARGETS }, (_, i) => targetId(i)));
    for (const t of targets) {
      expect(wantTargets.has(t.id.target_id)).toBe(true);
      expect(targetId(Number(t.properties[0].value))).toBe(t.id.target_id);
    }
    for (const a of actions) {
      const i = Number(/target_(\d+)$/.exec(a.id.target_id)![1]);
      expect(a.files).toHaveLength(FILES_PER_ACTION);
      expect(a.files.map((f: { uri: string }) => f.uri)).toEqual(Array.from({ length: FILES_PER_ACTION }, (_, f) => fileUri(i, a.id.configuration_id, f)));
    }
    const md = await call(download, "GetInvocationDownloadMetadata", { name: `${inv.name}/downloadMetadata` });
    expect(["POST_PROCESSING", "IMMUTABLE"]).toContain(md.upload_status);
  }, 600_000);
});
