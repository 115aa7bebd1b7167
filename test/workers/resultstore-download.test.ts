// ResultStoreDownload in workerd: data made through ResultStoreUpload, read back over Connect and
// REST, with response masks, wildcards, paging, export, search and file-set traversal.
import { SELF } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { beforeAll, describe, expect, it } from "vitest";
import { Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { UploadStatus } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { codeOf, connectClient, errorOf } from "./helpers.ts";
import { newInvocation, upload } from "./resultstore-upload-helpers.ts";

const all = connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*" });
const masked = (mask: string) => connectClient(ResultStoreDownload, { "x-goog-fieldmask": mask });
const nomask = connectClient(ResultStoreDownload);

const TARGETS = 7;
const CONFIGS = ["k8", "arm"];
let inv: { id: string; token: string; name: string };
const tname = (i: number) => `//pkg:t${i}`;

beforeAll(async () => {
  inv = await newInvocation({ invocation: { invocationAttributes: { users: ["dl-user"], labels: [`dl-${crypto.randomUUID()}`] }, timing: { startTime: { seconds: 1_800_000_000n } } } });
  const authorizationToken = inv.token;
  for (const c of CONFIGS) await upload.createConfiguration({ parent: inv.name, configId: c, configuration: { configurationAttributes: { cpu: c } }, authorizationToken });
  await upload.createFileSet({ parent: inv.name, fileSetId: "leaf", fileSet: { files: [{ uid: "a", uri: "file:///a" }] }, authorizationToken });
  await upload.createFileSet({ parent: inv.name, fileSetId: "mid", fileSet: { fileSets: [`${inv.name}/fileSets/leaf`] }, authorizationToken });
  for (let i = 0; i < TARGETS; i++) {
    const t = await upload.createTarget({ parent: inv.name, targetId: tname(i), target: { statusAttributes: { status: i % 2 ? Status.FAILED : Status.PASSED } }, authorizationToken });
    for (const c of CONFIGS) {
      const ct = await upload.createConfiguredTarget({ parent: t.name, configId: c, configuredTarget: { statusAttributes: { status: Status.PASSED } }, authorizationToken });
      await upload.createAction({ parent: ct.name, actionId: "build", action: { fileSets: [`${inv.name}/fileSets/mid`] }, authorizationToken });
    }
  }
});

describe("ResultStoreDownload", () => {
  it("requires a response field mask, and applies it", async () => {
    expect(await codeOf(nomask.getInvocation({ name: inv.name }))).toBe(Code.InvalidArgument);
    expect(await codeOf(masked("nosuchfield").getInvocation({ name: inv.name }))).toBe(Code.InvalidArgument);
    const full = await all.getInvocation({ name: inv.name });
    expect(full.invocationAttributes?.users).toEqual(["dl-user"]);
    const slim = await masked("name,id").getInvocation({ name: inv.name });
    expect(slim.name).toBe(inv.name);
    expect(slim.id?.invocationId).toBe(inv.id);
    expect(slim.invocationAttributes).toBeUndefined();
    const nested = await masked("targets.id,next_page_token").listTargets({ parent: inv.name, pageSize: 2 });
    expect(nested.targets).toHaveLength(2);
    expect(nested.targets[0]!.id?.targetId).toBe(tname(0));
    expect(nested.targets[0]!.name).toBe("");
    expect(nested.targets[0]!.statusAttributes).toBeUndefined();
    expect(nested.nextPageToken).not.toBe("");
    // GetInvocationDownloadMetadata needs none.
    const md = await nomask.getInvocationDownloadMetadata({ name: `${inv.name}/downloadMetadata` });
    expect(md.uploadStatus).toBe(UploadStatus.UPLOADING);
  });

  it("gets every kind by name; NOT_FOUND for what is not there", async () => {
    const t = `${inv.name}/targets/${encodeURIComponent(tname(1))}`;
    expect((await all.getTarget({ name: t })).id?.targetId).toBe(tname(1));
    expect((await all.getConfiguredTarget({ name: `${t}/configuredTargets/arm` })).id?.configurationId).toBe("arm");
    expect((await all.getAction({ name: `${t}/configuredTargets/arm/actions/build` })).id?.actionId).toBe("build");
    expect((await all.getConfiguration({ name: `${inv.name}/configs/k8` })).configurationAttributes?.cpu).toBe("k8");
    expect((await all.getFileSet({ name: `${inv.name}/fileSets/leaf` })).files[0]?.uri).toBe("file:///a");
    expect(await codeOf(all.getTarget({ name: `${inv.name}/targets/nope` }))).toBe(Code.NotFound);
    expect(await codeOf(all.getInvocation({ name: `invocations/${crypto.randomUUID()}` }))).toBe(Code.NotFound);
    expect(await codeOf(all.getInvocation({ name: "invocations/not-a-uuid" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.getTarget({ name: "targets/x" }))).toBe(Code.InvalidArgument);
  });

  it("pages by token and by offset: nothing lost, nothing doubled", async () => {
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const r = await all.listConfiguredTargets({ parent: `${inv.name}/targets/-`, pageSize: 3, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
      seen.push(...r.configuredTargets.map((c) => c.name));
      pageToken = r.nextPageToken;
      pages++;
    } while (pageToken);
    expect(seen).toHaveLength(TARGETS * CONFIGS.length);
    expect(new Set(seen).size).toBe(seen.length);
    expect(pages).toBe(Math.ceil((TARGETS * CONFIGS.length) / 3));
    const off = await all.listTargets({ parent: inv.name, pageSize: 2, pageStart: { case: "offset", value: 5n } });
    expect(off.targets.map((t) => t.id?.targetId)).toEqual([tname(5), tname(6)]);
    expect(await codeOf(all.listTargets({ parent: inv.name, pageStart: { case: "pageToken", value: "garbage" } }))).toBe(Code.InvalidArgument);
    // An empty token (clients that always send the field) is the first page.
    expect((await all.listTargets({ parent: inv.name, pageSize: 1, pageStart: { case: "pageToken", value: "" } })).targets[0]!.id?.targetId).toBe(tname(0));
  });

  it("wildcards: configured targets of all targets, actions of all configurations and targets", async () => {
    const one = await all.listConfiguredTargets({ parent: `${inv.name}/targets/${encodeURIComponent(tname(2))}` });
    expect(one.configuredTargets.map((c) => c.id?.configurationId)).toEqual(CONFIGS);
    const perTarget = await all.listActions({ parent: `${inv.name}/targets/${encodeURIComponent(tname(2))}/configuredTargets/-` });
    expect(perTarget.actions).toHaveLength(CONFIGS.length);
    const everything = await all.listActions({ parent: `${inv.name}/targets/-/configuredTargets/-` });
    expect(everything.actions).toHaveLength(TARGETS * CONFIGS.length);
    expect(await codeOf(all.listActions({ parent: `${inv.name}/targets/-/configuredTargets/k8` }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.listConfiguredTargets({ parent: `${inv.name}/targets/nope` }))).toBe(Code.NotFound);
  });

  it("list filters, which must use masked fields", async () => {
    const failed = await masked("targets.id,targets.status_attributes").listTargets({ parent: inv.name, filter: "status_attributes.status = FAILED" });
    expect(failed.targets.map((t) => t.id?.targetId)).toEqual([1, 3, 5].map(tname));
    const e = await errorOf(masked("targets.id").listTargets({ parent: inv.name, filter: "status_attributes.status = FAILED" }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/field mask/);
  });

  it("BatchListActions over named configured targets, with not_found", async () => {
    const t = (i: number, c: string) => `${inv.name}/targets/${encodeURIComponent(tname(i))}/configuredTargets/${c}`;
    const names = [t(0, "k8"), t(1, "arm"), t(0, "nope"), t(2, "k8")];
    const got: string[] = [];
    let pageToken = "";
    let notFound: string[] = [];
    do {
      const r = await all.batchListActions({ parent: inv.name, configuredTargets: names, pageSize: 1, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
      got.push(...r.actions.map((a) => a.name));
      notFound = [...notFound, ...r.notFound];
      pageToken = r.nextPageToken;
    } while (pageToken);
    expect(got).toEqual([t(0, "k8"), t(1, "arm"), t(2, "k8")].map((n) => `${n}/actions/build`));
    expect(notFound).toContain(t(0, "nope"));
  });

  it("ExportInvocation pages through everything, children before the next parent", async () => {
    const kinds: string[] = [];
    let pageToken = "";
    let invocations = 0;
    do {
      const r = await all.exportInvocation({ name: inv.name, pageSize: 5, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
      if (r.invocation) invocations++;
      kinds.push(...r.configurations.map((c) => `c:${c.id?.configurationId}`), ...r.targets.map((t) => `t:${t.id?.targetId}`));
      kinds.push(...r.configuredTargets.map((c) => `ct:${c.id?.targetId}/${c.id?.configurationId}`), ...r.actions.map((a) => `a:${a.id?.targetId}/${a.id?.configurationId}`));
      kinds.push(...r.fileSets.map((f) => `f:${f.id?.fileSetId}`));
      pageToken = r.nextPageToken;
    } while (pageToken);
    expect(invocations).toBe(1);
    expect(kinds).toHaveLength(CONFIGS.length + TARGETS + 2 * TARGETS * CONFIGS.length + 2);
    expect(new Set(kinds).size).toBe(kinds.length);
    const filtered = await all.exportInvocation({ name: inv.name, targetsFilter: `id.target_id = "${tname(3)}"` });
    expect(filtered.targets.map((t) => t.id?.targetId)).toEqual([tname(3)]);
    expect(filtered.actions).toHaveLength(CONFIGS.length);
  });

  it("TraverseFileSets: the transitive closure from a file set or from actions", async () => {
    const fromSet = await all.traverseFileSets({ name: `${inv.name}/fileSets/mid` });
    expect(fromSet.fileSets.map((f) => f.id?.fileSetId).sort()).toEqual(["leaf", "mid"]);
    const t = `${inv.name}/targets/${encodeURIComponent(tname(0))}/configuredTargets/k8/actions/-`;
    const fromActions = await all.traverseFileSets({ name: t });
    expect(fromActions.fileSets.map((f) => f.id?.fileSetId).sort()).toEqual(["leaf", "mid"]);
  });

  it("searches through the service, and over REST with the fields parameter", async () => {
    const r = await masked("invocations.id,next_page_token").searchInvocations({ query: "invocation_attributes.users:dl-user" });
    expect(r.invocations.map((i) => i.id?.invocationId)).toContain(inv.id);
    const ct = await all.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: `id.target_id = "${tname(4)}"` });
    expect(ct.configuredTargets.filter((c) => c.id?.invocationId === inv.id)).toHaveLength(CONFIGS.length);
    expect(await codeOf(all.searchConfiguredTargets({ parent: `${inv.name}/targets/-`, query: `id.target_id = "x"` }))).toBe(Code.InvalidArgument);
    const rest = await SELF.fetch(`http://kiln/v2/invocations:search?query=${encodeURIComponent("invocation_attributes.users:dl-user")}&fields=invocations.id,nextPageToken`);
    expect(rest.status).toBe(200);
    const body = (await rest.json()) as { invocations: { id: { invocationId: string }; name?: string }[] };
    expect(body.invocations.map((i) => i.id.invocationId)).toContain(inv.id);
    expect(body.invocations[0]!.name).toBeUndefined();
    const noMask = await SELF.fetch(`http://kiln/v2/${inv.name}`);
    expect(noMask.status).toBe(400);
    const got = await SELF.fetch(`http://kiln/v2/${inv.name}/targets/-/configuredTargets?fields=configuredTargets.name`);
    expect(((await got.json()) as { configuredTargets: unknown[] }).configuredTargets).toHaveLength(TARGETS * CONFIGS.length);
  });

  it("finalized invocations become IMMUTABLE in their download metadata", async () => {
    const x = await newInvocation();
    await upload.finalizeInvocation({ name: x.name, authorizationToken: x.token });
    let status = 0;
    for (let i = 0; i < 50 && status !== UploadStatus.IMMUTABLE; i++) {
      status = (await nomask.getInvocationDownloadMetadata({ name: `${x.name}/downloadMetadata` })).uploadStatus;
      if (status !== UploadStatus.IMMUTABLE) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(UploadStatus.IMMUTABLE);
  });
});
