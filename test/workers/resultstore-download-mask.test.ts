// The pure parts of ResultStoreDownload: response field masks (parse, restrict, prune), list
// filters and the search query compiler's syntax. No bindings needed.
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Status } from "../../src/gen/google/devtools/resultstore/v2/common_pb.ts";
import { InvocationSchema } from "../../src/gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { ListFileSetsResponseSchema, ListTargetsResponseSchema, SearchConfiguredTargetsResponseSchema } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { TargetSchema } from "../../src/gen/google/devtools/resultstore/v2/target_pb.ts";
import { FileSetSchema } from "../../src/gen/google/devtools/resultstore/v2/file_set_pb.ts";
import { listFilter } from "../../src/resultstore/list-filter.ts";
import { parseResponseMask } from "../../src/resultstore/response-mask.ts";
import { compileQuery, parseQuery } from "../../src/resultstore/search-query.ts";
import { counts, decodeToken, encodeToken } from "../../src/resultstore/page-token.ts";
import { thrownCode as code } from "./resultstore-download-helpers.ts";


const invocation = create(InvocationSchema, {
  name: "invocations/x",
  id: { invocationId: "x" },
  statusAttributes: { status: Status.PASSED, description: "fine" },
  invocationAttributes: { users: ["a"], labels: ["l"] },
  properties: [{ key: "k", value: "v" }],
});

describe("response field masks", () => {
  it("are required", () => {
    expect(code(() => parseResponseMask(undefined, InvocationSchema))).toBe(Code.InvalidArgument);
    expect(code(() => parseResponseMask(" , ", InvocationSchema))).toBe(Code.InvalidArgument);
  });

  it("refuse paths that name no field, or go below a scalar", () => {
    expect(code(() => parseResponseMask("nope", InvocationSchema))).toBe(Code.InvalidArgument);
    expect(code(() => parseResponseMask("name.x", InvocationSchema))).toBe(Code.InvalidArgument);
    expect(code(() => parseResponseMask("status_attributes.nope", InvocationSchema))).toBe(Code.InvalidArgument);
  });

  it("keep exactly the masked fields, in snake_case or JSON names", () => {
    const m = parseResponseMask("name, statusAttributes.status", InvocationSchema).apply(InvocationSchema, invocation);
    expect(m.name).toBe("invocations/x");
    expect(m.id).toBeUndefined();
    expect(m.statusAttributes?.status).toBe(Status.PASSED);
    expect(m.statusAttributes?.description).toBe("");
    expect(m.invocationAttributes).toBeUndefined();
    expect(m.properties).toEqual([]);
  });

  it("a shorter path keeps the whole subtree, whichever comes first", () => {
    for (const raw of ["status_attributes,status_attributes.status", "status_attributes.status,status_attributes"]) {
      const m = parseResponseMask(raw, InvocationSchema).apply(InvocationSchema, invocation);
      expect(m.statusAttributes?.description).toBe("fine");
    }
  });

  it("`*` keeps everything", () => {
    const m = parseResponseMask("*", InvocationSchema).apply(InvocationSchema, invocation);
    expect(m).toEqual(invocation);
  });

  it("reach into repeated messages", () => {
    const r = create(ListTargetsResponseSchema, {
      targets: [create(TargetSchema, { name: "a", id: { targetId: "a" } }), create(TargetSchema, { name: "b", id: { targetId: "b" } })],
      nextPageToken: "t",
    });
    const mask = parseResponseMask("targets.name", ListTargetsResponseSchema);
    const m = mask.apply(ListTargetsResponseSchema, r);
    expect(m.targets.map((t) => t.name)).toEqual(["a", "b"]);
    expect(m.targets[0]!.id).toBeUndefined();
    expect(m.nextPageToken).toBe("");
    expect(mask.covers("targets.name")).toBe(true);
    expect(mask.covers("targets.id")).toBe(false);
    expect(mask.covers("next_page_token")).toBe(false);
  });

  it("where only some fields are supported: `*` and parents mean those, others are refused", () => {
    const only = ["configured_targets.name", "configured_targets.status_attributes", "next_page_token"];
    const r = create(SearchConfiguredTargetsResponseSchema, {
      configuredTargets: [{ name: "n", id: { targetId: "t" }, statusAttributes: { status: Status.FAILED } }],
      nextPageToken: "p",
    });
    const star = parseResponseMask("*", SearchConfiguredTargetsResponseSchema, only).apply(SearchConfiguredTargetsResponseSchema, r);
    expect(star.configuredTargets[0]!.name).toBe("n");
    expect(star.configuredTargets[0]!.id).toBeUndefined();
    expect(star.nextPageToken).toBe("p");
    const parent = parseResponseMask("configuredTargets", SearchConfiguredTargetsResponseSchema, only).apply(SearchConfiguredTargetsResponseSchema, r);
    expect(parent.configuredTargets[0]!.statusAttributes?.status).toBe(Status.FAILED);
    expect(parent.configuredTargets[0]!.id).toBeUndefined();
    expect(parent.nextPageToken).toBe("");
    expect(code(() => parseResponseMask("configured_targets.name,configured_targets.id", SearchConfiguredTargetsResponseSchema, only))).toBe(Code.InvalidArgument);
    expect(code(() => parseResponseMask("configured_targets.status_attributes.status", SearchConfiguredTargetsResponseSchema, only))).toBe(0);
  });
});

describe("list filters", () => {
  const all = parseResponseMask("*", ListTargetsResponseSchema);
  const t = (status: Status, tags: string[], props: [string, string][] = []) =>
    create(TargetSchema, { statusAttributes: { status }, targetAttributes: { tags }, properties: props.map(([key, value]) => ({ key, value })) });

  it("evaluate =, :, AND/OR/NOT and propertyEquals on each resource", () => {
    const f = listFilter('status_attributes.status = FAILED OR (target_attributes.tags:slow AND NOT propertyEquals("k", "v"))', TargetSchema, "targets", all);
    expect(f(t(Status.FAILED, []))).toBe(true);
    expect(f(t(Status.PASSED, ["slow"]))).toBe(true);
    expect(f(t(Status.PASSED, ["slow"], [["k", "v"]]))).toBe(false);
    expect(f(t(Status.PASSED, ["fast"]))).toBe(false);
  });

  it("take enum values by name in any case or by number, and refuse others", () => {
    for (const v of ["FAILED", "failed", String(Status.FAILED)]) {
      const f = listFilter(`status_attributes.status = ${v}`, TargetSchema, "targets", all);
      expect(f(t(Status.FAILED, [])), v).toBe(true);
      expect(f(t(Status.PASSED, [])), v).toBe(false);
    }
    expect(code(() => listFilter("status_attributes.status = SOMETIMES", TargetSchema, "targets", all))).toBe(Code.InvalidArgument);
    expect(code(() => listFilter("status_attributes.status = 999", TargetSchema, "targets", all))).toBe(Code.InvalidArgument);
  });

  it("need every field they use in the mask, and real fields", () => {
    const slim = parseResponseMask("targets.name", ListTargetsResponseSchema);
    expect(code(() => listFilter("status_attributes.status = FAILED", TargetSchema, "targets", slim))).toBe(Code.InvalidArgument);
    expect(code(() => listFilter('propertyEquals("k", "v")', TargetSchema, "targets", slim))).toBe(Code.InvalidArgument);
    expect(code(() => listFilter("nope = 1", TargetSchema, "targets", all))).toBe(Code.InvalidArgument);
    expect(code(() => listFilter("otherFn(1)", TargetSchema, "targets", all))).toBe(Code.InvalidArgument);
    const sets = parseResponseMask("*", ListFileSetsResponseSchema);
    expect(code(() => listFilter('propertyEquals("k", "v")', FileSetSchema, "file_sets", sets))).toBe(Code.InvalidArgument);
  });
});

describe("the search query syntax", () => {
  it("parses AND by juxtaposition, OR, NOT and parentheses", () => {
    expect(parseQuery("")).toBeNull();
    expect(parseQuery("a = 1 b:2")).toEqual({ k: "and", parts: [{ k: "cmp", field: "a", op: "=", value: "1" }, { k: "cmp", field: "b", op: ":", value: "2" }] });
    expect(parseQuery("NOT (a = 1 OR b = 'x y')")).toEqual({
      k: "not",
      part: { k: "or", parts: [{ k: "cmp", field: "a", op: "=", value: "1" }, { k: "cmp", field: "b", op: "=", value: "x y" }] },
    });
    expect(parseQuery('propertyEquals("k", "v")')).toEqual({ k: "fn", name: "propertyEquals", args: ["k", "v"] });
  });

  it("takes bare values with ':' (labels, times) after an operator", () => {
    expect(parseQuery("id.target_id = //pkg:test status_attributes.status = PASSED")).toEqual({
      k: "and",
      parts: [
        { k: "cmp", field: "id.target_id", op: "=", value: "//pkg:test" },
        { k: "cmp", field: "status_attributes.status", op: "=", value: "PASSED" },
      ],
    });
    expect(parseQuery("timing.start_time >= 2026-11-02T10:00:00Z")).toEqual({ k: "cmp", field: "timing.start_time", op: ">=", value: "2026-11-02T10:00:00Z" });
    expect(parseQuery("(a = x:y)")).toEqual({ k: "cmp", field: "a", op: "=", value: "x:y" });
  });

  it("refuses bad syntax and unsupported operators as INVALID_ARGUMENT", () => {
    for (const q of ['a = "open', "a = 1)", "(a = 1", "a != 1", "a", "= 1", "a = 1 AND"]) {
      expect(code(() => parseQuery(q)), q).toBe(Code.InvalidArgument);
    }
    expect(code(() => compileQuery("invocation", "timing.start_time = 2026-01-01T00:00:00Z", false))).toBe(Code.InvalidArgument);
    expect(code(() => compileQuery("invocation", "timing.start_time > yesterday", false))).toBe(Code.InvalidArgument);
    expect(code(() => compileQuery("invocation", "status_attributes.status = SOMETIMES", false))).toBe(Code.InvalidArgument);
    expect(code(() => compileQuery("invocation", "invocation_attributes.users = alice", false))).toBe(Code.InvalidArgument);
  });

  it("binds every value as a parameter, never into the SQL", () => {
    const c = compileQuery("invocation", `workspace_info.hostname = "x'; DROP TABLE rs_invocations; --"`, true);
    expect(c.sql).not.toContain("DROP");
    expect(c.params).toEqual(["x'; DROP TABLE rs_invocations; --"]);
  });
});

describe("page tokens", () => {
  it("round-trip their position, strings included", () => {
    expect(decodeToken(encodeToken({ c: 3, s: 9 }), counts("c", "s"))).toEqual({ c: 3, s: 9 });
    const cursor = { k: null, n: "invocations/ü/x" };
    expect(decodeToken(encodeToken(cursor), (p): p is typeof cursor => typeof p["n"] === "string")).toEqual(cursor);
  });

  it("refuse anything this server did not issue for the method", () => {
    const s = counts("s");
    for (const t of ["garbage", "v1.", "v1.!!!", `v1.${btoa("[1]")}`, `v1.${btoa('{"s":-1}')}`, `v1.${btoa('{"s":1.5}')}`, `v1.${btoa("\xff\xfe")}`, encodeToken({ o: 1 })]) {
      expect(code(() => decodeToken(t, s)), t).toBe(Code.InvalidArgument);
    }
  });
});
