// Resource names and ids of the upload API: url-encoded ids round-trip, malformed names are refused.
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { checkChildIds, checkResumeToken, isUuid345 } from "../../src/resultstore/ids.ts";
import { keyOf, nameOf, parseName, parseUploadMetadataName } from "../../src/resultstore/names.ts";
import { tokenMatches } from "../../src/resultstore/token.ts";

const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return ConnectError.from(e).code;
  }
  return "ok";
};

describe("resource names", () => {
  it("round-trip ids with slashes, colons, spaces and percent signs", () => {
    const k = keyOf("action", "inv", { targetId: "//pkg/a:b c%2F", configId: "k8", actionId: "test_shard0" });
    const name = nameOf(k);
    expect(name).toBe("invocations/inv/targets/%2F%2Fpkg%2Fa%3Ab%20c%252F/configuredTargets/k8/actions/test_shard0");
    expect(parseName(name, "action", "name")).toEqual(k);
    // A name whose ids were not encoded by the client still parses to the same ids where unambiguous.
    expect(parseName("invocations/inv/targets/%2F%2Fpkg:a", "target", "name").targetId).toBe("//pkg:a");
  });

  it("refuse the wrong kind, shape, empty ids and bad percent-encoding", () => {
    expect(code(() => parseName("invocations/x/targets/t", "invocation", "name"))).toBe(Code.InvalidArgument);
    expect(code(() => parseName("invocations/x/configs/c", "target", "name"))).toBe(Code.InvalidArgument);
    expect(code(() => parseName("invocations//targets/t", "target", "name"))).toBe(Code.InvalidArgument);
    expect(code(() => parseName("invocations/x/targets/%E0%A4%A", "target", "name"))).toBe(Code.InvalidArgument);
    expect(code(() => parseName("operations/x", "invocation", "name"))).toBe(Code.InvalidArgument);
    expect(parseUploadMetadataName("invocations/abc/uploadMetadata")).toBe("abc");
    expect(code(() => parseUploadMetadataName("invocations/abc"))).toBe(Code.InvalidArgument);
  });
});

describe("ids and tokens", () => {
  it("accept v3/v4/v5 UUIDs only", () => {
    expect(isUuid345(crypto.randomUUID())).toBe(true);
    expect(isUuid345("6fa459ea-ee8a-3ca4-894e-db77e160355e")).toBe(true);
    expect(isUuid345("886313e1-3b8a-5372-9b90-0c9aee199e5d")).toBe(true);
    expect(isUuid345("c232ab00-9414-11ec-b3c8-9f6bdeced846")).toBe(false); // v1
    expect(isUuid345("6fa459ea-ee8a-4ca4-c94e-db77e160355e")).toBe(false); // wrong variant
    expect(isUuid345("6fa459eaee8a4ca4894edb77e160355e")).toBe(false);
  });

  it("limit child ids as the proto says", () => {
    const k = (ids: object, kind: "target" | "configuration" | "action" = "target") => () =>
      checkChildIds(keyOf(kind, "i", { targetId: "t", configId: "c", actionId: "a", ...ids }));
    expect(code(k({ targetId: "x".repeat(1024) }))).toBe("ok");
    expect(code(k({ targetId: "x".repeat(1025) }))).toBe(Code.InvalidArgument);
    expect(code(k({ targetId: "-" }))).toBe(Code.InvalidArgument);
    expect(code(k({ configId: "k8-opt_1" }, "configuration"))).toBe("ok");
    expect(code(k({ configId: "k8.opt" }, "configuration"))).toBe(Code.InvalidArgument);
    expect(code(k({ actionId: "a".repeat(513) }, "action"))).toBe(Code.InvalidArgument);
    expect(code(k({ actionId: "-" }, "action"))).toBe(Code.InvalidArgument);
  });

  it("take web-safe base64 resume tokens, and compare authorization tokens exactly", () => {
    expect(code(() => checkResumeToken("AAAA", "t"))).toBe("ok");
    expect(code(() => checkResumeToken("a-b_", "t"))).toBe("ok");
    expect(code(() => checkResumeToken("AAA=", "t"))).toBe("ok");
    expect(code(() => checkResumeToken("a+b/", "t"))).toBe(Code.InvalidArgument);
    expect(code(() => checkResumeToken("A", "t"))).toBe(Code.InvalidArgument);
    expect(code(() => checkResumeToken("", "t"))).toBe(Code.InvalidArgument);
    const t = crypto.randomUUID();
    expect(tokenMatches(t, t)).toBe(true);
    expect(tokenMatches(t, t.toUpperCase())).toBe(false);
    expect(tokenMatches(t, t.slice(0, 35))).toBe(false);
    expect(tokenMatches(t, "")).toBe(false);
  });
});
