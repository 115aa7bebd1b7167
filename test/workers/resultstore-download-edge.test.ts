// ResultStoreDownload edge cases (helper D2's review): masks into well-known types, tokens carried
// to another method, pages while uploads continue.
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
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
});
