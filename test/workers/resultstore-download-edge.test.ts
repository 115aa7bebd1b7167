// ResultStoreDownload edge cases (helper D2's review): masks into well-known types, tokens carried
// to another method, pages while uploads continue.
import { toBinary, type DescMessage } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  BatchListActionsResponseSchema,
  ExportInvocationResponseSchema,
  ListActionsResponseSchema,
  ListTargetsResponseSchema,
  ResultStoreDownload,
  TraverseFileSetsResponseSchema,
} from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { codeOf, connectClient, errorOf } from "./helpers.ts";
import { newInvocation, upload } from "./resultstore-upload-helpers.ts";

const all = connectClient(ResultStoreDownload, { "x-goog-fieldmask": "*" });
const masked = (mask: string) => connectClient(ResultStoreDownload, { "x-goog-fieldmask": mask });

type Start = { case: "pageToken"; value: string } | { case: undefined };
const from = (token: string): Start => (token ? { case: "pageToken", value: token } : { case: undefined });

describe("ResultStoreDownload edges", () => {
  it("a mask keeps a Timestamp whole; a path inside one is INVALID_ARGUMENT, not an internal error", async () => {
    const inv = await newInvocation({ invocation: { timing: { startTime: { seconds: 1_800_000_000n, nanos: 5 } } } });
    const whole = await masked("timing.start_time").getInvocation({ name: inv.name });
    expect(whole.timing?.startTime?.seconds).toBe(1_800_000_000n);
    // Inside one is refused clearly (JSON renders a Timestamp as a string), not an internal error.
    const e = await errorOf(masked("timing.start_time.seconds").getInvocation({ name: inv.name }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/google\.protobuf\.Timestamp/);
    expect(await codeOf(masked("timing.duration.nanos").getInvocation({ name: inv.name }))).toBe(Code.InvalidArgument);
  });

  it("a page token of one method is refused by another", async () => {
    const inv = await newInvocation();
    for (const t of ["a", "b", "c"]) await upload.createTarget({ parent: inv.name, targetId: t, target: {}, authorizationToken: inv.token });
    const page = await all.listTargets({ parent: inv.name, pageSize: 1 });
    expect(page.nextPageToken).not.toBe("");
    const exp = await all.exportInvocation({ name: inv.name, pageSize: 1 });
    expect(exp.nextPageToken).not.toBe("");
    expect(await codeOf(all.exportInvocation({ name: inv.name, pageStart: from(page.nextPageToken) }))).toBe(Code.InvalidArgument);
    expect(await codeOf(all.listTargets({ parent: inv.name, pageStart: from(exp.nextPageToken) }))).toBe(Code.InvalidArgument);
  });

  it("targets created between pages come later, and nothing is repeated", async () => {
    const inv = await newInvocation();
    const mk = (t: string) => upload.createTarget({ parent: inv.name, targetId: t, target: {}, authorizationToken: inv.token });
    for (const t of ["t0", "t1", "t2"]) await mk(t);
    const seen: string[] = [];
    let token = "";
    let added = false;
    do {
      const r = await all.listTargets({ parent: inv.name, pageSize: 2, pageStart: from(token) });
      seen.push(...r.targets.map((t) => t.id!.targetId));
      token = r.nextPageToken;
      if (!added) {
        added = true;
        await mk("t3");
      }
    } while (token);
    expect(seen).toEqual(["t0", "t1", "t2", "t3"]);
  });

  it("a page of large resources stays deliverable (bounded by bytes, not just by count)", async () => {
    const inv = await newInvocation();
    const big = "x".repeat(1_900_000);
    const N = 20; // 20 x 1.9 MB = 38 MB: over a Durable Object RPC answer (32 MiB)
    for (let i = 0; i < N; i++) {
      await upload.createTarget({ parent: inv.name, targetId: `t${i}`, target: { properties: [{ key: "k", value: big }] }, authorizationToken: inv.token });
    }
    const seen: string[] = [];
    let token = "";
    do {
      const r = await all.listTargets({ parent: inv.name, pageSize: 1000, pageStart: from(token) });
      expect(size(ListTargetsResponseSchema, r)).toBeLessThan(GRPC_DEFAULT_MAX);
      seen.push(...r.targets.map((t) => t.id!.targetId));
      token = r.nextPageToken;
    } while (token);
    expect(seen).toEqual(Array.from({ length: N }, (_, i) => `t${i}`));
  }, 120_000);

  it("every paged method keeps a page of 1 MB resources under a gRPC client's 4 MiB, and loses nothing", async () => {
    const inv = await newInvocation();
    const mb = "y".repeat(1_000_000);
    const authorizationToken = inv.token;
    const t = await upload.createTarget({ parent: inv.name, targetId: "t", target: {}, authorizationToken });
    const cts: string[] = [];
    for (const c of ["c1", "c2"]) {
      await upload.createConfiguration({ parent: inv.name, configId: c, configuration: {}, authorizationToken });
      cts.push((await upload.createConfiguredTarget({ parent: t.name, configId: c, configuredTarget: {}, authorizationToken })).name);
      for (let i = 0; i < 3; i++) {
        await upload.createAction({ parent: cts.at(-1)!, actionId: `a${i}`, action: { properties: [{ key: "k", value: mb }], fileSets: [`${inv.name}/fileSets/root`] }, authorizationToken });
      }
    }
    const leaves = Array.from({ length: 6 }, (_, i) => `${inv.name}/fileSets/f${i}`);
    for (let i = 0; i < 6; i++) await upload.createFileSet({ parent: inv.name, fileSetId: `f${i}`, fileSet: { files: [{ uid: "u", uri: `file:///${mb}` }] }, authorizationToken });
    await upload.createFileSet({ parent: inv.name, fileSetId: "root", fileSet: { fileSets: leaves }, authorizationToken });

    // Wildcard ListActions, and ListActions under one target.
    for (const parent of [`${inv.name}/targets/-/configuredTargets/-`, `${t.name}/configuredTargets/-`]) {
      const names = await pages(ListActionsResponseSchema, (pageStart) => all.listActions({ parent, pageSize: 1000, pageStart }), (r) => r.actions.map((a) => a.name));
      expect(names).toHaveLength(6);
      expect(new Set(names).size).toBe(6);
    }
    // BatchListActions over both configured targets.
    const batch = await pages(BatchListActionsResponseSchema, (pageStart) => all.batchListActions({ parent: inv.name, configuredTargets: cts, pageSize: 1000, pageStart }), (r) => r.actions.map((a) => a.name));
    expect(batch).toEqual(cts.flatMap((ct) => [0, 1, 2].map((i) => `${ct}/actions/a${i}`)));
    // ExportInvocation: 2 configurations, 1 target, 2 configured targets, 6 actions, 7 file sets.
    const exported = await pages(ExportInvocationResponseSchema, (pageStart) => all.exportInvocation({ name: inv.name, pageSize: 1000, pageStart }), (r) => [
      ...r.configurations.map((x) => x.name),
      ...r.targets.map((x) => x.name),
      ...r.configuredTargets.map((x) => x.name),
      ...r.actions.map((x) => x.name),
      ...r.fileSets.map((x) => x.name),
    ]);
    expect(exported).toHaveLength(2 + 1 + 2 + 6 + 7);
    expect(new Set(exported).size).toBe(exported.length);
    // TraverseFileSets from an action (wildcard) and from the root file set.
    for (const name of [`${cts[0]}/actions/-`, `${inv.name}/fileSets/root`]) {
      const sets = await pages(TraverseFileSetsResponseSchema, (pageStart) => all.traverseFileSets({ name, pageSize: 1000, pageStart }), (r) => r.fileSets.map((f) => f.name));
      expect(sets.sort()).toEqual([`${inv.name}/fileSets/root`, ...leaves].sort());
    }
  }, 120_000);
});

/** grpc-js's default limit on a received message. */
const GRPC_DEFAULT_MAX = 4 * 1024 * 1024;
const size = <D extends DescMessage>(schema: D, msg: Parameters<typeof toBinary<D>>[1]) => toBinary(schema, msg).byteLength;

/** Every page of a paged call; each page must fit a gRPC client's default limit. */
async function pages<D extends DescMessage, R extends Parameters<typeof toBinary<D>>[1] & { nextPageToken: string }>(
  schema: D,
  call: (pageStart: Start) => Promise<R>,
  items: (r: R) => string[],
): Promise<string[]> {
  const out: string[] = [];
  let token = "";
  let n = 0;
  do {
    const r = await call(from(token));
    expect(size(schema, r)).toBeLessThan(GRPC_DEFAULT_MAX);
    out.push(...items(r));
    token = r.nextPageToken;
    expect(++n).toBeLessThan(100);
  } while (token);
  return out;
}
