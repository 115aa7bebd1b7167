// The search index (D1) and its query language, on the real D1 binding: rows written as the
// InvocationDO writes them, then SearchInvocations / SearchConfiguredTargets queries.
import { env } from "cloudflare:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { beforeAll, describe, expect, it } from "vitest";
import { Language, Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { ConfigurationSchema } from "../../src/gen/google/devtools/resultstore/v2/configuration_pb.ts";
import { ConfiguredTargetSchema } from "../../src/gen/google/devtools/resultstore/v2/configured_target_pb.ts";
import { InvocationSchema, type Invocation } from "../../src/gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { TargetSchema, TargetType, TestSize } from "../../src/gen/google/devtools/resultstore/v2/target_pb.ts";
import { fromBinary } from "@bufbuild/protobuf";
import { removeInvocationFromIndex, searchIndex, writeSearchIndex, type IndexChange, type SearchCursor } from "../../src/resultstore/search-index.ts";
import { compileQuery } from "../../src/resultstore/search-query.ts";
import { thrownCode as code } from "./resultstore-download-helpers.ts";

const TENANT = `search-${crypto.randomUUID()}`;
const ts = (iso: string) => {
  const ms = Date.parse(iso);
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
};

function invocation(id: string, o: { status: Status; start: string; host: string; users: string[]; labels: string[]; props?: [string, string][] }): IndexChange {
  const m = create(InvocationSchema, {
    name: `invocations/${id}`,
    id: { invocationId: id },
    statusAttributes: { status: o.status },
    timing: { startTime: ts(o.start) },
    workspaceInfo: { hostname: o.host },
    invocationAttributes: { users: o.users, labels: o.labels },
    properties: (o.props ?? []).map(([key, value]) => ({ key, value })),
  });
  return { kind: "invocation", name: m.name, data: toBinary(InvocationSchema, m), uploadStatus: 1 };
}

function children(inv: string, target: string, config: string, o: { status: Status; start?: string; tags: string[]; cpu: string }): IndexChange[] {
  const t = create(TargetSchema, {
    name: `invocations/${inv}/targets/${encodeURIComponent(target)}`,
    id: { invocationId: inv, targetId: target },
    targetAttributes: { type: TargetType.TEST, language: Language.SH, tags: o.tags },
    testAttributes: { size: TestSize.SMALL },
    properties: [{ key: "owner", value: "team-a" }],
  });
  const c = create(ConfigurationSchema, {
    name: `invocations/${inv}/configs/${config}`,
    id: { invocationId: inv, configurationId: config },
    configurationAttributes: { cpu: o.cpu },
  });
  const ct = create(ConfiguredTargetSchema, {
    name: `${t.name}/configuredTargets/${config}`,
    id: { invocationId: inv, targetId: target, configurationId: config },
    statusAttributes: { status: o.status },
    ...(o.start ? { timing: { startTime: ts(o.start) } } : {}),
  });
  return [
    { kind: "target", name: t.name, data: toBinary(TargetSchema, t) },
    { kind: "configuration", name: c.name, data: toBinary(ConfigurationSchema, c) },
    { kind: "configuredTarget", name: ct.name, data: toBinary(ConfiguredTargetSchema, ct) },
  ];
}


async function ids(query: string, exactMatch = false, extra: { offset?: number; limit?: number; projectId?: string } = {}) {
  const r = await searchIndex(env.INDEX, TENANT, "invocation", query, { exactMatch, offset: extra.offset ?? 0, limit: extra.limit ?? 100, projectId: extra.projectId });
  return r.items.map((b) => (fromBinary(InvocationSchema, b) as Invocation).id!.invocationId);
}

async function cts(query: string) {
  const r = await searchIndex(env.INDEX, TENANT, "configuredTarget", query, { exactMatch: false, offset: 0, limit: 100 });
  return r.items.map((b) => fromBinary(ConfiguredTargetSchema, b).name).sort();
}

describe("the search query language", () => {
  it("refuses what the API does not list, naming it", () => {
    expect(code(() => compileQuery("invocation", "status_attributes.status = PASSED", false))).toBe(0);
    for (const bad of [
      "timing.start_time = 2026-01-01T00:00:00Z", // only comparisons on times
      "invocation_attributes.users = alice", // only contains on repeated strings
      "status_attributes.status : PASSED",
      "status_attributes.status = GREEN", // not an enum value
      "workspace_info.working_directory = /x", // not searchable
      "timing.start_time > yesterday",
      'propertyEquals("k")',
      'nosuchFunction("k", "v")',
      "status_attributes.status != PASSED",
      "(status_attributes.status = PASSED",
      'name = "unterminated',
      "status_attributes.status =",
    ]) {
      expect(code(() => compileQuery("invocation", bad, false)), bad).toBe(Code.InvalidArgument);
    }
  });

  it("a configured-target search needs an equals on id.target_id outside OR and NOT", () => {
    expect(code(() => compileQuery("configuredTarget", "", false))).toBe(Code.InvalidArgument);
    expect(code(() => compileQuery("configuredTarget", "status_attributes.status = PASSED", false))).toBe(Code.InvalidArgument);
    expect(code(() => compileQuery("configuredTarget", 'id.target_id = "//a" OR status_attributes.status = PASSED', false))).toBe(Code.InvalidArgument);
    expect(code(() => compileQuery("configuredTarget", 'NOT id.target_id = "//a"', false))).toBe(Code.InvalidArgument);
    expect(code(() => compileQuery("configuredTarget", 'id.target_id = "//a" status_attributes.status = PASSED', false))).toBe(0);
    // Invocation-only fields are not configured-target fields.
    expect(code(() => compileQuery("configuredTarget", 'id.target_id = "//a" workspace_info.hostname = h', false))).toBe(Code.InvalidArgument);
  });
});

describe("search over the D1 index", () => {
  beforeAll(async () => {
    await writeSearchIndex(env.INDEX, TENANT, [
      invocation("inv-1", { status: Status.PASSED, start: "2026-11-01T10:00:00Z", host: "CI-Runner-1.example", users: ["Alice"], labels: ["nightly"], props: [["branch", "main"]] }),
      invocation("inv-2", { status: Status.FAILED, start: "2026-11-02T10:00:00Z", host: "laptop", users: ["bob", "alice"], labels: ["presubmit"] }),
      invocation("inv-3", { status: Status.PASSED, start: "2026-11-03T10:00:00Z", host: "ci-runner-2", users: ["carol"], labels: ["nightly", "arm"], props: [["branch", "dev"]] }),
      ...children("inv-1", "//pkg:test", "k8", { status: Status.PASSED, start: "2026-11-01T10:01:00Z", tags: ["small", "unit"], cpu: "k8" }),
      ...children("inv-2", "//pkg:test", "k8", { status: Status.FAILED, tags: ["unit"], cpu: "k8" }),
      ...children("inv-3", "//pkg:test", "arm", { status: Status.PASSED, start: "2026-11-03T10:01:00Z", tags: ["unit"], cpu: "aarch64" }),
      ...children("inv-3", "//pkg:other", "arm", { status: Status.PASSED, tags: ["unit"], cpu: "aarch64" }),
    ]);
    // Another tenant's rows never show.
    await writeSearchIndex(env.INDEX, `${TENANT}-other`, [
      invocation("inv-x", { status: Status.PASSED, start: "2026-11-05T10:00:00Z", host: "ci", users: ["alice"], labels: ["nightly"] }),
    ]);
  });

  it("SearchInvocations: each supported field, newest first", async () => {
    expect(await ids("")).toEqual(["inv-3", "inv-2", "inv-1"]);
    expect(await ids("status_attributes.status = PASSED")).toEqual(["inv-3", "inv-1"]);
    expect(await ids("status_attributes.status = 6")).toEqual(["inv-2"]);
    expect(await ids('id.invocation_id = "inv-2"')).toEqual(["inv-2"]);
    expect(await ids("name = invocations/inv-1")).toEqual(["inv-1"]);
    expect(await ids("download_metadata.upload_status = UPLOADING")).toEqual(["inv-3", "inv-2", "inv-1"]);
    expect(await ids("download_metadata.upload_status = IMMUTABLE")).toEqual([]);
    expect(await ids("invocation_attributes.users:alice")).toEqual(["inv-2", "inv-1"]);
    expect(await ids("invocation_attributes.labels:nightly")).toEqual(["inv-3", "inv-1"]);
    expect(await ids('timing.start_time >= "2026-11-02T10:00:00Z"')).toEqual(["inv-3", "inv-2"]);
    expect(await ids('timing.start_time < "2026-11-02T10:00:00Z"')).toEqual(["inv-1"]);
    expect(await ids('propertyEquals("branch", "main")')).toEqual(["inv-1"]);
    expect(await ids("invocation_attributes.labels:nightly AND NOT status_attributes.status = FAILED OR id.invocation_id = inv-2")).toEqual([
      "inv-3",
      "inv-2",
      "inv-1",
    ]);
    expect(await ids("(status_attributes.status = FAILED OR invocation_attributes.labels:arm) invocation_attributes.users:bob")).toEqual(["inv-2"]);
  });

  it("exact_match: loose matching ignores case and punctuation, exact does not", async () => {
    expect(await ids("workspace_info.hostname = ci-runner-1.EXAMPLE")).toEqual(["inv-1"]);
    expect(await ids("workspace_info.hostname = ci-runner-1.EXAMPLE", true)).toEqual([]);
    expect(await ids("workspace_info.hostname = CI-Runner-1.example", true)).toEqual(["inv-1"]);
    expect(await ids("invocation_attributes.users:alice", true)).toEqual(["inv-2"]);
  });

  it("pages by offset with nothing lost or doubled; project_id narrows", async () => {
    const first = await searchIndex(env.INDEX, TENANT, "invocation", "", { exactMatch: false, offset: 0, limit: 2 });
    const second = await searchIndex(env.INDEX, TENANT, "invocation", "", { exactMatch: false, offset: 2, limit: 2 });
    expect(first.more).toBe(true);
    expect(second.more).toBe(false);
    expect(first.items.length + second.items.length).toBe(3);
    expect(await ids("", false, { projectId: "nope" })).toEqual([]);
  });

  it("SearchConfiguredTargets: target id plus the synthetic invocation, target and configuration fields", async () => {
    const all = ["invocations/inv-1/targets/%2F%2Fpkg%3Atest/configuredTargets/k8", "invocations/inv-2/targets/%2F%2Fpkg%3Atest/configuredTargets/k8", "invocations/inv-3/targets/%2F%2Fpkg%3Atest/configuredTargets/arm"];
    expect(await cts('id.target_id = "//pkg:test"')).toEqual(all);
    expect(await cts('id.target_id = "//pkg:test" status_attributes.status = FAILED')).toEqual([all[1]]);
    expect(await cts('id.target_id = "//pkg:test" configuration.configuration_attributes.cpu = AARCH64')).toEqual([all[2]]);
    expect(await cts('id.target_id = "//pkg:test" invocation.workspace_info.hostname = laptop')).toEqual([all[1]]);
    expect(await cts('id.target_id = "//pkg:test" target.target_attributes.tags:small')).toEqual([all[0]]);
    expect(await cts('id.target_id = "//pkg:test" target.target_attributes.type = TEST target.target_attributes.language = SH target.test_attributes.size = SMALL')).toEqual(all);
    expect(await cts('id.target_id = "//pkg:test" invocation.invocation_attributes.users:bob')).toEqual([all[1]]);
    expect(await cts('id.target_id = "//pkg:test" invocation.invocation_attributes.labels:arm')).toEqual([all[2]]);
    // timing.start_time is the configured target's own; coalesced_start_time falls back to the invocation's.
    expect(await cts('id.target_id = "//pkg:test" timing.start_time > "2026-11-01T00:00:00Z"')).toEqual([all[0], all[2]]);
    expect(await cts('id.target_id = "//pkg:test" coalesced_start_time > "2026-11-01T00:00:00Z"')).toEqual(all);
    expect(await cts('id.target_id = "//pkg:test" invocationPropertyEquals("branch", "dev")')).toEqual([all[2]]);
    expect(await cts('id.target_id = "//pkg:test" targetPropertyEquals("owner", "team-a")')).toEqual(all);
    expect(await cts('id.target_id = "//pkg:test" configurationPropertyEquals("owner", "team-a")')).toEqual([]);
  });

  it("continues after a cursor (the last row's key and name), for both kinds", async () => {
    for (const [kind, query] of [["invocation", "invocation_attributes.users:alice OR invocation_attributes.users:carol"], ["configuredTarget", 'id.target_id = "//pkg:test"']] as const) {
      const whole = await searchIndex(env.INDEX, TENANT, kind, query, { exactMatch: false, offset: 0, limit: 100 });
      const paged: Uint8Array[] = [];
      let after: SearchCursor | undefined;
      for (;;) {
        const r = await searchIndex(env.INDEX, TENANT, kind, query, { exactMatch: false, offset: 0, limit: 1, after });
        paged.push(...r.items);
        if (!r.more) break;
        after = r.last;
      }
      expect(paged.length, kind).toBe(3);
      expect(paged, kind).toEqual(whole.items);
    }
  });

  it("removed rows and removed invocations leave the index", async () => {
    await writeSearchIndex(env.INDEX, TENANT, [{ kind: "invocation", name: "invocations/inv-2", data: null }]);
    expect(await ids("")).toEqual(["inv-3", "inv-1"]);
    await removeInvocationFromIndex(env.INDEX, TENANT, "invocations/inv-3");
    expect(await ids("")).toEqual(["inv-1"]);
    expect(await cts('id.target_id = "//pkg:other"')).toEqual([]);
  });
});
