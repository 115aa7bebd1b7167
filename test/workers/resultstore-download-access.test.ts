// ResultStoreDownload rules beyond the basics: API keys and tenants, the X-Goog-FieldMask header on
// REST and gRPC-web, required queries, restricted search masks, paging searches and wildcard
// lists by token and offset, BatchListActions offsets, and a 10,000-row index write.
import { env, SELF } from "cloudflare:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { InvocationSchema } from "../../src/gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { ResultStoreUpload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { TargetSchema } from "../../src/gen/google/devtools/resultstore/v2/target_pb.ts";
import { searchIndex, writeSearchIndex, type IndexChange } from "../../src/resultstore/search-index.ts";
import { codeOf, connectClient, grpcWebClient } from "./helpers.ts";
import { newInvocation, upload, uuid } from "./resultstore-upload-helpers.ts";

const all = connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*" });

type Start = { case: "pageToken"; value: string } | { case: undefined };
const from = (token: string): Start => (token ? { case: "pageToken", value: token } : { case: undefined });

describe("API keys and tenants", () => {
  const ACME_RW = "dl-acme-rw-0123456789-0123456789";
  const ACME_RO = "dl-acme-ro-0123456789-0123456789";
  const GLOBEX = "dl-globex-ro-0123456789-01234567";

  it("reads need a valid key (read access is enough) and see only their tenant's invocations", async () => {
    env.API_KEYS = JSON.stringify([
      { key: ACME_RW, access: "read-write", tenant: "acme" },
      { key: ACME_RO, access: "read", tenant: "acme" },
      { key: GLOBEX, access: "read", tenant: "globex" },
    ]);
    try {
      const writer = connectClient(ResultStoreUpload, { authorization: `Bearer ${ACME_RW}` });
      const id = uuid();
      const label = `tenant-${uuid()}`;
      await writer.createInvocation({ invocationId: id, invocation: { invocationAttributes: { labels: [label] } } });
      await writer.createConfiguration({ parent: `invocations/${id}`, configId: "c", configuration: {} });
      const t = await writer.createTarget({ parent: `invocations/${id}`, targetId: "t", target: {} });
      await writer.createConfiguredTarget({ parent: t.name, configId: "c", configuredTarget: {} });
      const reader = (key?: string) => connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*", ...(key ? { authorization: `Bearer ${key}` } : {}) });
      const acme = reader(ACME_RO);
      const globex = reader(GLOBEX);

      expect(await codeOf(reader().getInvocation({ name: `invocations/${id}` }))).toBe(Code.Unauthenticated);
      expect(await codeOf(reader("not-a-key-0123456789").getInvocation({ name: `invocations/${id}` }))).toBe(Code.Unauthenticated);
      // Authentication comes first: a bad request without a key learns nothing about the request.
      const anonymous = connectClient(ResultStoreDownload);
      expect(await codeOf(anonymous.getInvocation({ name: "invocations/not-a-uuid" }))).toBe(Code.Unauthenticated);
      expect(await codeOf(anonymous.searchConfiguredTargets({ parent: "bad", query: "" }))).toBe(Code.Unauthenticated);
      expect(await codeOf(anonymous.searchInvocations({ query: "" }))).toBe(Code.Unauthenticated);
      expect(await codeOf(anonymous.batchListActions({ parent: "bad" }))).toBe(Code.Unauthenticated);
      expect(await codeOf(anonymous.getInvocationDownloadMetadata({ name: "bad" }))).toBe(Code.Unauthenticated);
      expect(await codeOf(anonymous.listTargets({ parent: "bad" }))).toBe(Code.Unauthenticated);
      expect(await codeOf(anonymous.traverseFileSets({ name: "bad" }))).toBe(Code.Unauthenticated);
      expect((await acme.getInvocation({ name: `invocations/${id}` })).id?.invocationId).toBe(id);
      expect((await acme.listTargets({ parent: `invocations/${id}` })).targets).toHaveLength(1);

      // Another tenant: the invocation does not exist for it, and its searches do not find it.
      expect(await codeOf(globex.getInvocation({ name: `invocations/${id}` }))).toBe(Code.NotFound);
      expect(await codeOf(globex.listTargets({ parent: `invocations/${id}` }))).toBe(Code.NotFound);
      expect(await codeOf(globex.getInvocationDownloadMetadata({ name: `invocations/${id}/downloadMetadata` }))).toBe(Code.NotFound);
      expect((await globex.searchInvocations({ query: `invocation_attributes.labels:${label}` })).invocations).toEqual([]);
      expect((await globex.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: `id.target_id = t invocation.invocation_attributes.labels:${label}` })).configuredTargets).toEqual([]);
      expect((await acme.searchInvocations({ query: `invocation_attributes.labels:${label}` })).invocations.map((i) => i.id?.invocationId)).toEqual([id]);
      const found = await acme.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: `id.target_id = t invocation.invocation_attributes.labels:${label}` });
      expect(found.configuredTargets.map((c) => c.name)).toEqual([`invocations/${id}/targets/t/configuredTargets/c`]);
    } finally {
      delete env.API_KEYS;
    }
  });
});

describe("response masks on every surface", () => {
  it("REST takes the X-Goog-FieldMask header as well as fields; gRPC-web the header", async () => {
    const inv = await newInvocation({ invocation: { invocationAttributes: { users: ["mask-user"] } } });
    const viaHeader = await SELF.fetch(`http://kiln/v2/${inv.name}`, { headers: { "x-goog-fieldmask": "id" } });
    expect(viaHeader.status).toBe(200);
    expect(await viaHeader.json()).toEqual({ id: { invocationId: inv.id } });
    const viaFields = await SELF.fetch(`http://kiln/v2/${inv.name}?fields=invocationAttributes.users`);
    expect(await viaFields.json()).toEqual({ invocationAttributes: { users: ["mask-user"] } });
    const badMask = await SELF.fetch(`http://kiln/v2/${inv.name}?fields=nope`);
    expect(badMask.status).toBe(400);
    const web = grpcWebClient(ResultStoreDownload, { "x-goog-fieldmask": "name" });
    const got = await web.getInvocation({ name: inv.name });
    expect(got.name).toBe(inv.name);
    expect(got.invocationAttributes).toBeUndefined();
    expect(await codeOf(grpcWebClient(ResultStoreDownload).getInvocation({ name: inv.name }))).toBe(Code.InvalidArgument);
  });
});

describe("searches", () => {
  it("need a query; SearchConfiguredTargets answers only the fields its mask supports", async () => {
    expect(await codeOf(all.searchInvocations({ query: "" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.searchInvocations({ query: "bogus_field = 1" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: "" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: "status_attributes.status = PASSED" }))).toBe(Code.InvalidArgument);

    const inv = await newInvocation();
    await upload.createConfiguration({ parent: inv.name, configId: "c", configuration: {}, authorizationToken: inv.token });
    const t = await upload.createTarget({ parent: inv.name, targetId: `only-${uuid()}`, target: {}, authorizationToken: inv.token });
    await upload.createConfiguredTarget({
      parent: t.name,
      configId: "c",
      configuredTarget: { statusAttributes: { status: 1 }, properties: [{ key: "k", value: "v" }] },
      authorizationToken: inv.token,
    });
    const targetId = decodeURIComponent(t.name.split("/").at(-1)!);
    const r = await all.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: `id.target_id = "${targetId}"` });
    expect(r.configuredTargets).toHaveLength(1);
    expect(r.configuredTargets[0]!.id?.targetId).toBe(targetId);
    expect(r.configuredTargets[0]!.statusAttributes?.status).toBe(1);
    expect(r.configuredTargets[0]!.properties).toEqual([]);
    const props = connectClient(ResultStoreDownload, { "x-goog-fieldmask": "configured_targets.properties" });
    expect(await codeOf(props.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: `id.target_id = "${targetId}"` }))).toBe(Code.InvalidArgument);
  });

  it("page by token and by offset over the service: nothing lost, nothing doubled; garbage tokens refused", async () => {
    const label = `paging-${uuid()}`;
    const made: string[] = [];
    for (let i = 0; i < 7; i++) {
      const inv = await newInvocation({ invocation: { invocationAttributes: { labels: [label] }, timing: { startTime: { seconds: BigInt(1_700_000_000 + i) } } } });
      made.push(inv.id);
    }
    // One without a start time: it comes last.
    const timeless = await newInvocation({ invocation: { invocationAttributes: { labels: [label] } } });
    const newestFirst = [...made.reverse(), timeless.id];
    const query = `invocation_attributes.labels:${label}`;
    const seen: string[] = [];
    let token = "";
    let page = 0;
    do {
      const r = await all.searchInvocations({ query, pageSize: 3, pageStart: from(token) });
      seen.push(...r.invocations.map((i) => i.id!.invocationId));
      token = r.nextPageToken;
      // A newer invocation arriving between pages sorts before the cursor: no page shifts, nothing doubled.
      if (page++ === 0) await newInvocation({ invocation: { invocationAttributes: { labels: [label] }, timing: { startTime: { seconds: 1_900_000_000n } } } });
    } while (token);
    expect(seen).toEqual(newestFirst);
    const off = await all.searchInvocations({ query, pageSize: 3, pageStart: { case: "offset", value: 6n } });
    expect(off.invocations.map((i) => i.id!.invocationId)).toEqual(newestFirst.slice(5));
    expect(off.nextPageToken).toBe("");
    expect(await codeOf(all.searchInvocations({ query, pageStart: { case: "pageToken", value: "v1.garbage" } }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.searchInvocations({ query, pageStart: { case: "offset", value: -1n } }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.searchInvocations({ query, pageSize: -1 }))).toBe(Code.InvalidArgument);
    // A list token is not a search token, and the other way round.
    const first = await all.searchInvocations({ query, pageSize: 1 });
    expect(await codeOf(all.listTargets({ parent: `invocations/${made[0]}`, pageStart: { case: "pageToken", value: first.nextPageToken } }))).toBe(Code.InvalidArgument);
  });
});

describe("lists", () => {
  it("wildcard lists group by parent in the parents' list order, whatever the creation order", async () => {
    const inv = await newInvocation();
    const auth = { authorizationToken: inv.token };
    for (const c of ["a", "b"]) await upload.createConfiguration({ parent: inv.name, configId: c, configuration: {}, ...auth });
    const t: string[] = [];
    for (let i = 0; i < 3; i++) t.push((await upload.createTarget({ parent: inv.name, targetId: `t${i}`, target: {}, ...auth })).name);
    // Configured targets and actions created last target first, configuration b before a.
    const ct = (i: number, c: string) => `${t[i]}/configuredTargets/${c}`;
    for (const i of [2, 0, 1]) {
      for (const c of ["b", "a"]) {
        await upload.createConfiguredTarget({ parent: t[i]!, configId: c, configuredTarget: {}, ...auth });
      }
    }
    for (const i of [1, 2, 0]) for (const c of ["a", "b"]) for (const x of ["y", "x"]) await upload.createAction({ parent: ct(i, c), actionId: x, action: {}, ...auth });
    const targets = (await all.listTargets({ parent: inv.name })).targets.map((x) => x.name);
    expect(targets).toEqual(t);
    const cts = [0, 1, 2].flatMap((i) => ["b", "a"].map((c) => ct(i, c)));
    const actions = cts.flatMap((c) => ["y", "x"].map((x) => `${c}/actions/${x}`));
    for (const pageSize of [0, 1, 4]) {
      const listedCts: string[] = [];
      const listedActions: string[] = [];
      const perTarget: string[] = [];
      for (const [out, list] of [
        [listedCts, (pt: string) => all.listConfiguredTargets({ parent: `${inv.name}/targets/-`, pageSize, pageStart: from(pt) }).then((r) => ({ names: r.configuredTargets.map((x) => x.name), next: r.nextPageToken }))],
        [listedActions, (pt: string) => all.listActions({ parent: `${inv.name}/targets/-/configuredTargets/-`, pageSize, pageStart: from(pt) }).then((r) => ({ names: r.actions.map((x) => x.name), next: r.nextPageToken }))],
        [perTarget, (pt: string) => all.listActions({ parent: `${t[1]}/configuredTargets/-`, pageSize, pageStart: from(pt) }).then((r) => ({ names: r.actions.map((x) => x.name), next: r.nextPageToken }))],
      ] as const) {
        let pt = "";
        do {
          const r = await list(pt);
          out.push(...r.names);
          pt = r.next;
        } while (pt);
      }
      expect(listedCts, `page size ${pageSize}`).toEqual(cts);
      expect(listedActions, `page size ${pageSize}`).toEqual(actions);
      expect(perTarget, `page size ${pageSize}`).toEqual(actions.filter((a) => a.startsWith(`${t[1]}/`)));
    }
    // Offsets count in the same order.
    expect((await all.listActions({ parent: `${inv.name}/targets/-/configuredTargets/-`, pageSize: 3, pageStart: { case: "offset", value: 5n } })).actions.map((a) => a.name)).toEqual(actions.slice(5, 8));
  });

  it("ListActions with both wildcards and BatchListActions page by token and offset without loss or repeats", async () => {
    const inv = await newInvocation();
    const names: string[] = [];
    const cts: string[] = [];
    for (const c of ["a", "b"]) await upload.createConfiguration({ parent: inv.name, configId: c, configuration: {}, authorizationToken: inv.token });
    for (let t = 0; t < 3; t++) {
      const target = await upload.createTarget({ parent: inv.name, targetId: `t${t}`, target: {}, authorizationToken: inv.token });
      for (const c of ["a", "b"]) {
        const ct = await upload.createConfiguredTarget({ parent: target.name, configId: c, configuredTarget: {}, authorizationToken: inv.token });
        cts.push(ct.name);
        for (let a = 0; a < 2; a++) names.push((await upload.createAction({ parent: ct.name, actionId: `x${a}`, action: {}, authorizationToken: inv.token })).name);
      }
    }
    const listed: string[] = [];
    let token = "";
    do {
      const r = await all.listActions({ parent: `${inv.name}/targets/-/configuredTargets/-`, pageSize: 5, pageStart: from(token) });
      listed.push(...r.actions.map((a) => a.name));
      token = r.nextPageToken;
    } while (token);
    expect(listed).toEqual(names);
    const off = await all.listActions({ parent: `${inv.name}/targets/-/configuredTargets/-`, pageSize: 4, pageStart: { case: "offset", value: 10n } });
    expect(off.actions.map((a) => a.name)).toEqual(names.slice(10));

    const batched: string[] = [];
    token = "";
    do {
      const r = await all.batchListActions({ parent: inv.name, configuredTargets: cts, pageSize: 3, pageStart: from(token) });
      batched.push(...r.actions.map((a) => a.name));
      token = r.nextPageToken;
    } while (token);
    expect(batched).toEqual(names);
    // Offsets count actions across the named configured targets, in the order named.
    for (const skip of [0, 1, 2, 3, 11, 12, 40]) {
      const r = await all.batchListActions({ parent: inv.name, configuredTargets: cts, pageSize: 3, pageStart: { case: "offset", value: BigInt(skip) } });
      expect(r.actions.map((a) => a.name), `offset ${skip}`).toEqual(names.slice(skip, skip + 3));
    }
    expect(await codeOf(all.batchListActions({ parent: inv.name, configuredTargets: cts, pageStart: { case: "pageToken", value: "nope" } }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.batchListActions({ parent: inv.name, configuredTargets: [`invocations/${uuid()}/targets/t0/configuredTargets/a`] }))).toBe(Code.InvalidArgument);
  });
});

describe("the search index", () => {
  it("takes 10,000 rows in one call, and a repeat of it is harmless", async () => {
    const tenant = `bulk-${uuid()}`;
    const inv = "bulk-inv";
    const changes: IndexChange[] = [
      { kind: "invocation", name: `invocations/${inv}`, data: toBinary(InvocationSchema, create(InvocationSchema, { name: `invocations/${inv}`, id: { invocationId: inv } })), uploadStatus: 1 },
    ];
    for (let i = 1; i < 10_000; i++) {
      const t = create(TargetSchema, { name: `invocations/${inv}/targets/t${i}`, id: { invocationId: inv, targetId: `t${i}` } });
      changes.push({ kind: "target", name: t.name, data: toBinary(TargetSchema, t) });
    }
    await writeSearchIndex(env.INDEX, tenant, changes);
    await writeSearchIndex(env.INDEX, tenant, changes);
    const n = await env.INDEX.prepare(`SELECT count(*) AS n FROM rs_targets WHERE tenant = ?`).bind(tenant).first<{ n: number }>("n");
    expect(n).toBe(9_999);
    const found = await searchIndex(env.INDEX, tenant, "invocation", `id.invocation_id = ${inv}`, { exactMatch: true, offset: 0, limit: 10 });
    expect(found.items).toHaveLength(1);
  }, 120_000);
});

describe("REST bindings", () => {
  it("serve every download route of the proto", async () => {
    const inv = await newInvocation();
    const auth = { authorizationToken: inv.token };
    await upload.createConfiguration({ parent: inv.name, configId: "k8", configuration: {}, ...auth });
    await upload.createFileSet({ parent: inv.name, fileSetId: "fs", fileSet: {}, ...auth });
    const t = await upload.createTarget({ parent: inv.name, targetId: "//rest:t", target: {}, ...auth });
    const ct = await upload.createConfiguredTarget({ parent: t.name, configId: "k8", configuredTarget: {}, ...auth });
    const a = await upload.createAction({ parent: ct.name, actionId: "build", action: { fileSets: [`${inv.name}/fileSets/fs`] }, ...auth });
    const get = async (path: string) => {
      const r = await SELF.fetch(`http://kiln/v2/${path}${path.includes("?") ? "&" : "?"}fields=*`);
      expect(r.status, `${path}: ${r.status}`).toBe(200);
      return (await r.json()) as Record<string, { name: string }[]> & { name?: string; uploadStatus?: string };
    };
    expect((await get(`${inv.name}/downloadMetadata`)).uploadStatus).toBe("UPLOADING");
    expect((await get(`${inv.name}/configs`)).configurations!.map((c) => c.name)).toEqual([`${inv.name}/configs/k8`]);
    expect((await get(`${inv.name}/configs/k8`)).name).toBe(`${inv.name}/configs/k8`);
    expect((await get(`${inv.name}/fileSets`)).fileSets!.map((f) => f.name)).toEqual([`${inv.name}/fileSets/fs`]);
    expect((await get(`${inv.name}/fileSets/fs`)).name).toBe(`${inv.name}/fileSets/fs`);
    expect((await get(`${inv.name}/targets`)).targets!.map((x) => x.name)).toEqual([t.name]);
    expect((await get(t.name)).name).toBe(t.name);
    expect((await get(`${inv.name}/targets/-/configuredTargets`)).configuredTargets!.map((x) => x.name)).toEqual([ct.name]);
    expect((await get(ct.name)).name).toBe(ct.name);
    expect((await get(`${inv.name}/targets/-/configuredTargets/-/actions`)).actions!.map((x) => x.name)).toEqual([a.name]);
    expect((await get(a.name)).name).toBe(a.name);
    expect((await get(`${inv.name}:export`)).actions!.map((x) => x.name)).toEqual([a.name]);
    expect((await get(`${inv.name}/actions:batchList?configuredTargets=${encodeURIComponent(ct.name)}`)).actions!.map((x) => x.name)).toEqual([a.name]);
    expect((await get(`${inv.name}/fileSets/fs:traverseFileSets`)).fileSets!.map((x) => x.name)).toEqual([`${inv.name}/fileSets/fs`]);
    expect((await get(`${a.name}:traverseFileSets`)).fileSets!.map((x) => x.name)).toEqual([`${inv.name}/fileSets/fs`]);
    const found = await SELF.fetch(`http://kiln/v2/invocations/-/targets/-/configuredTargets:search?query=${encodeURIComponent('id.target_id = "//rest:t"')}&fields=configuredTargets.name`);
    expect(found.status).toBe(200);
    expect(((await found.json()) as { configuredTargets: { name: string }[] }).configuredTargets.map((x) => x.name)).toContain(ct.name);
  });
});

describe("deleted invocations", () => {
  it("are gone from every read and from both searches", async () => {
    const label = `deleted-${uuid()}`;
    const inv = await newInvocation({ invocation: { invocationAttributes: { labels: [label] } } });
    await upload.createConfiguration({ parent: inv.name, configId: "c", configuration: {}, authorizationToken: inv.token });
    const t = await upload.createTarget({ parent: inv.name, targetId: label, target: {}, authorizationToken: inv.token });
    await upload.createConfiguredTarget({ parent: t.name, configId: "c", configuredTarget: {}, authorizationToken: inv.token });
    const ctQuery = { parent: "invocations/-/targets/-", query: `id.target_id = ${label}` };
    expect((await all.searchInvocations({ query: `invocation_attributes.labels:${label}` })).invocations).toHaveLength(1);
    expect((await all.searchConfiguredTargets(ctQuery)).configuredTargets).toHaveLength(1);
    await upload.finalizeInvocation({ name: inv.name, authorizationToken: inv.token });
    await upload.deleteInvocation({ name: inv.name });
    expect(await codeOf(all.getInvocation({ name: inv.name }))).toBe(Code.NotFound);
    expect(await codeOf(all.getTarget({ name: t.name }))).toBe(Code.NotFound);
    expect(await codeOf(all.listTargets({ parent: inv.name }))).toBe(Code.NotFound);
    expect(await codeOf(all.exportInvocation({ name: inv.name }))).toBe(Code.NotFound);
    expect(await codeOf(all.getInvocationDownloadMetadata({ name: `${inv.name}/downloadMetadata` }))).toBe(Code.NotFound);
    expect((await all.searchInvocations({ query: `invocation_attributes.labels:${label}` })).invocations).toEqual([]);
    expect((await all.searchConfiguredTargets(ctQuery)).configuredTargets).toEqual([]);
  });
});

describe("names and positions", () => {
  it("an invocation UUID in upper case names the same resources", async () => {
    const inv = await newInvocation();
    const upper = `invocations/${inv.id.toUpperCase()}`;
    await upload.createConfiguration({ parent: inv.name, configId: "c", configuration: {}, authorizationToken: inv.token });
    const t = await upload.createTarget({ parent: inv.name, targetId: "T", target: {}, authorizationToken: inv.token });
    await upload.createConfiguredTarget({ parent: t.name, configId: "c", configuredTarget: {}, authorizationToken: inv.token });
    expect((await all.getInvocation({ name: upper })).name).toBe(inv.name);
    expect((await all.getTarget({ name: `${upper}/targets/T` })).name).toBe(t.name);
    expect((await all.listConfiguredTargets({ parent: `${upper}/targets/T` })).configuredTargets).toHaveLength(1);
    expect((await all.listActions({ parent: `${upper}/targets/T/configuredTargets/-` })).actions).toEqual([]);
    expect((await all.getInvocationDownloadMetadata({ name: `${upper}/downloadMetadata` })).name).toBe(`${inv.name}/downloadMetadata`);
    expect((await all.searchInvocations({ query: `name = ${upper}` })).invocations.map((i) => i.name)).toEqual([inv.name]);
    expect((await all.searchInvocations({ query: `id.invocation_id = ${inv.id.toUpperCase()}` })).invocations.map((i) => i.name)).toEqual([inv.name]);
    // Target ids are not case-folded.
    const ctsOf = async (q: string) => (await all.searchConfiguredTargets({ parent: "invocations/-/targets/-", query: q })).configuredTargets.filter((c) => c.id?.invocationId === inv.id);
    expect(await ctsOf("id.target_id = T")).toHaveLength(1);
    expect(await ctsOf("id.target_id = t")).toHaveLength(0);
  });

  it("GetInvocationDownloadMetadata needs no mask but applies one that is given", async () => {
    const inv = await newInvocation();
    const md = await connectClient(ResultStoreDownload, { "x-goog-fieldmask": "upload_status" }).getInvocationDownloadMetadata({ name: `${inv.name}/downloadMetadata` });
    expect(md.name).toBe("");
    expect(md.uploadStatus).toBe(1);
    expect(await codeOf(connectClient(ResultStoreDownload, { "x-goog-fieldmask": "nope" }).getInvocationDownloadMetadata({ name: `${inv.name}/downloadMetadata` }))).toBe(Code.InvalidArgument);
  });

  it("ExportInvocation tokens resume after their row: a resource added behind it repeats nothing", async () => {
    const inv = await newInvocation();
    await upload.createConfiguration({ parent: inv.name, configId: "c", configuration: {}, authorizationToken: inv.token });
    for (let i = 0; i < 4; i++) await upload.createTarget({ parent: inv.name, targetId: `t${i}`, target: {}, authorizationToken: inv.token });
    const p1 = await all.exportInvocation({ name: inv.name, pageSize: 2 });
    expect(p1.invocation?.name).toBe(inv.name);
    expect(p1.configurations.map((c) => c.id!.configurationId)).toEqual(["c"]);
    const p2 = await all.exportInvocation({ name: inv.name, pageSize: 2, pageStart: { case: "pageToken", value: p1.nextPageToken } });
    expect(p2.targets.map((t) => t.id!.targetId)).toEqual(["t0", "t1"]);
    // Configurations come before targets: this one sorts behind the cursor.
    await upload.createConfiguration({ parent: inv.name, configId: "d", configuration: {}, authorizationToken: inv.token });
    const p3 = await all.exportInvocation({ name: inv.name, pageSize: 2, pageStart: { case: "pageToken", value: p2.nextPageToken } });
    expect(p3.targets.map((t) => t.id!.targetId)).toEqual(["t2", "t3"]);
    expect(p3.configurations).toEqual([]);
  });

  it("ExportInvocation's offsets and tokens count the same positions", async () => {
    const inv = await newInvocation();
    await upload.createConfiguration({ parent: inv.name, configId: "c", configuration: {}, authorizationToken: inv.token });
    for (let i = 0; i < 4; i++) await upload.createTarget({ parent: inv.name, targetId: `t${i}`, target: {}, authorizationToken: inv.token });
    const names = (r: { invocation?: { name: string }; configurations: { name: string }[]; targets: { name: string }[] }) => [
      ...(r.invocation ? [r.invocation.name] : []),
      ...r.configurations.map((c) => c.name),
      ...r.targets.map((t) => t.name),
    ];
    const everything = names(await all.exportInvocation({ name: inv.name }));
    expect(everything).toHaveLength(6);
    for (let off = 0; off <= 6; off++) {
      const r = await all.exportInvocation({ name: inv.name, pageSize: 2, pageStart: { case: "offset", value: BigInt(off) } });
      expect(names(r), `offset ${off}`).toEqual(everything.slice(off, off + 2));
      if (r.nextPageToken) {
        const next = await all.exportInvocation({ name: inv.name, pageSize: 2, pageStart: { case: "pageToken", value: r.nextPageToken } });
        expect(names(next), `after offset ${off}`).toEqual(everything.slice(off + 2, off + 4));
      }
    }
  });
});
