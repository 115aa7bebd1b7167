import { describe, expect, it } from "vitest";
import { parseDigest } from "../../src/storage/digest.ts";
import { parseInstanceName } from "../../src/storage/instance-name.ts";
import { parseReadResource, parseWriteResource } from "../../src/storage/resource-name.ts";
import { hex, newSha256, restoreSha256, saveSha256 } from "../../src/storage/sha256-state.ts";
import { compileTemplate, matchTemplate } from "../../src/surfaces/rest-template.ts";
import { pseudoRandom, sha256Hex } from "./helpers.ts";

describe("sha256 state", () => {
  it("survives save and restore at any offset, matching Web Crypto", async () => {
    const data = pseudoRandom(200_003, 3);
    for (const cut of [0, 1, 63, 64, 65, 100_000, 200_003]) {
      const h = newSha256();
      h.update(data.subarray(0, cut));
      const resumed = restoreSha256(saveSha256(h));
      resumed.update(data.subarray(cut));
      expect(hex(resumed.digest())).toBe(await sha256Hex(data));
    }
  });
});

describe("digests and names", () => {
  it("parses digests strictly", () => {
    expect(parseDigest({ hash: "a".repeat(64), sizeBytes: 5n } as never)).toEqual({ hash: "a".repeat(64), size: 5 });
    expect(() => parseDigest(undefined)).toThrow(/required/);
    expect(() => parseDigest({ hash: "a".repeat(63), sizeBytes: 5n } as never)).toThrow(/SHA-256/);
    expect(() => parseDigest({ hash: "a".repeat(64), sizeBytes: -5n } as never)).toThrow(/size/);
  });

  it("accepts empty and multi-segment instance names, refuses reserved ones", () => {
    expect(parseInstanceName("")).toBe("");
    expect(parseInstanceName("projects/p/instances/default_instance")).toBe("projects/p/instances/default_instance");
    for (const bad of ["blobs", "a/actionResults", "a//b", "a/", "../x", "a b"]) expect(() => parseInstanceName(bad)).toThrow();
  });

  it("parses ByteStream resource names", () => {
    const h = "b".repeat(64);
    expect(parseReadResource(`a/b/blobs/${h}/12`)).toEqual({ instanceName: "a/b", digest: { hash: h, size: 12 } });
    expect(parseReadResource(`blobs/${h}/0`).instanceName).toBe("");
    expect(parseWriteResource(`x/uploads/123e4567-e89b-12d3-a456-426614174000/blobs/${h}/7/meta/data`)).toEqual({
      instanceName: "x",
      uploadId: "123e4567-e89b-12d3-a456-426614174000",
      digest: { hash: h, size: 7 },
    });
    expect(() => parseReadResource(`blobs/blake3/${h}/1`)).toThrow(/not supported/);
    expect(() => parseReadResource(`blobs/${h}/1/extra`)).toThrow(/trailing/);
    expect(() => parseWriteResource(`uploads/u/blobs/${h}`)).toThrow();
  });
});

describe("REST path templates", () => {
  it("binds fields, multi-segment instance names and the empty instance", () => {
    const t = compileTemplate("/v2/{instance_name=**}/actionResults/{action_digest.hash}/{action_digest.size_bytes}");
    expect(Object.fromEntries(matchTemplate(t, "/v2/a/b/actionResults/ff/3")!)).toEqual({
      instance_name: "a/b",
      "action_digest.hash": "ff",
      "action_digest.size_bytes": "3",
    });
    expect(matchTemplate(t, "/v2/actionResults/ff/3")!.get("instance_name")).toBe("");
    expect(matchTemplate(t, "/v2//actionResults/ff/3")!.get("instance_name")).toBe("");
    const ops = compileTemplate("/v1/{name=operations/**}:cancel");
    expect(matchTemplate(ops, "/v1/operations/abc/def:cancel")!.get("name")).toBe("operations/abc/def");
    expect(matchTemplate(ops, "/v1/other/abc:cancel")).toBeNull();
  });
});
