// Reads of a larger invocation (1,000 targets x 2 configured targets x 1 action, made with
// UploadBatch): ExportInvocation gives every resource once, children right after their parent
// (checked in windows of 2), and fast enough — a page used to scan the whole invocation per row
// (seconds per page at this size); BatchListActions and the per-parent lists read name ranges.
import { describe, expect, it } from "vitest";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { UploadRequest_UploadOperation as Op } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { connectClient } from "./helpers.ts";
import { upload, uuid } from "./resultstore-upload-helpers.ts";

const all = connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*" });
const tok = (s: string) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_");
const TARGETS = 1000;
const CONFIGS = ["a", "b"];

describe("reads at size", () => {
  let inv: { name: string };

  it("pages through 5,002 resources in export order, each once", async () => {
    const id = uuid();
    const token = uuid();
    inv = await upload.createInvocation({ invocationId: id, authorizationToken: token, initialResumeToken: tok("s"), invocation: {} });
    // Configurations first, then targets created in reverse so creation order differs from target order below.
    const reqs: unknown[] = CONFIGS.map((c) => ({ id: { configurationId: c }, uploadOperation: Op.CREATE, resource: { case: "configuration", value: {} } }));
    const expected: string[] = CONFIGS.map((c) => `c ${c}`);
    for (let t = 0; t < TARGETS; t++) {
      const targetId = `//pkg:t${t}`;
      reqs.push({ id: { targetId }, uploadOperation: Op.CREATE, resource: { case: "target", value: {} } });
      expected.push(`t ${targetId}`);
      for (const c of [...CONFIGS].reverse()) {
        reqs.push({ id: { targetId, configurationId: c }, uploadOperation: Op.CREATE, resource: { case: "configuredTarget", value: {} } });
        reqs.push({ id: { targetId, configurationId: c, actionId: "x" }, uploadOperation: Op.CREATE, resource: { case: "action", value: {} } });
        expected.push(`ct ${targetId} ${c}`, `a ${targetId} ${c}`);
      }
    }
    let prev = tok("s");
    for (let i = 0; i < reqs.length; i += 2500) {
      const next = tok(`s${i}`);
      await upload.uploadBatch({ parent: inv.name, authorizationToken: token, resumeToken: prev, nextResumeToken: next, uploadRequests: reqs.slice(i, i + 2500) as never });
      prev = next;
    }

    // The export order, the invocation first; each page must be the next window of it (the
    // response groups a page by kind, so order shows at page boundaries: small pages first).
    const order = [`i ${id}`, ...expected];
    const lines = (r: Awaited<ReturnType<typeof all.exportInvocation>>) => [
      ...(r.invocation ? [`i ${r.invocation.id!.invocationId}`] : []),
      ...r.configurations.map((c) => `c ${c.id!.configurationId}`),
      ...r.targets.map((t) => `t ${t.id!.targetId}`),
      ...r.configuredTargets.map((c) => `ct ${c.id!.targetId} ${c.id!.configurationId}`),
      ...r.actions.map((a) => `a ${a.id!.targetId} ${a.id!.configurationId}`),
    ];
    let pos = 0;
    let pageToken = "";
    for (let i = 0; i < 40; i++) {
      const r = await all.exportInvocation({ name: inv.name, pageSize: 2, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
      const page = lines(r);
      expect(page.sort(), `window at ${pos}`).toEqual(order.slice(pos, pos + 2).sort());
      pos += page.length;
      pageToken = r.nextPageToken;
    }

    const got: string[] = [];
    pageToken = "";
    let pages = 0;
    do {
      const r = await all.exportInvocation({ name: inv.name, pageSize: 700, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
      const page = lines(r);
      expect([...page].sort(), `page ${pages}`).toEqual(order.slice(got.length, got.length + page.length).sort());
      got.push(...page);
      pageToken = r.nextPageToken;
      pages++;
    } while (pageToken);

    expect(pages).toBe(Math.ceil(order.length / 700));
    expect(got).toHaveLength(order.length);
  }, 120_000);

  it("BatchListActions over 2,000 configured targets in one call per page; per-parent lists", async () => {
    const enc = encodeURIComponent;
    const cts = Array.from({ length: TARGETS }, (_, t) => CONFIGS.map((c) => `${inv.name}/targets/${enc(`//pkg:t${t}`)}/configuredTargets/${c}`)).flat();
    const got: string[] = [];
    let pageToken = "";
    do {
      const r = await all.batchListActions({ parent: inv.name, configuredTargets: cts, pageSize: 300, pageStart: pageToken ? { case: "pageToken", value: pageToken } : { case: undefined } });
      got.push(...r.actions.map((a) => a.name));
      expect(r.notFound).toEqual([]);
      pageToken = r.nextPageToken;
    } while (pageToken);
    expect(got).toEqual(cts.map((c) => `${c}/actions/x`));
    const one = `${inv.name}/targets/${enc("//pkg:t999")}`;
    expect((await all.listConfiguredTargets({ parent: one })).configuredTargets.map((c) => c.id!.configurationId)).toEqual([...CONFIGS].reverse());
    expect((await all.listActions({ parent: `${one}/configuredTargets/-` })).actions).toHaveLength(CONFIGS.length);
    expect((await all.listActions({ parent: `${one}/configuredTargets/a` })).actions.map((a) => a.name)).toEqual([`${one}/configuredTargets/a/actions/x`]);
    // A target whose id is a prefix of another's ("t1" of "t10"...) lists only its own children.
    expect((await all.listConfiguredTargets({ parent: `${inv.name}/targets/${enc("//pkg:t1")}` })).configuredTargets.every((c) => c.id!.targetId === "//pkg:t1")).toBe(true);
  }, 120_000);
});
