// The runner grants the network from the same platform the worker placed the action by
// (src/shared/platform.ts): Action.platform when set, else Command.platform. Read the other way
// round, an action placed on a runner for network=on ran without it, and one whose effective
// platform never asked for the network got it.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ActionSchema, CommandSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { wantsNetwork } from "../../container/runner/execute-action.ts";
import { effectivePlatform } from "../../src/shared/platform.ts";

const platform = (...props: [string, string][]) => ({ properties: props.map(([name, value]) => ({ name, value })) });

describe("the network an action gets", () => {
  it("follows Action.platform when the client set it, whatever Command.platform says", () => {
    const action = create(ActionSchema, { platform: platform(["network", "on"]) });
    const command = create(CommandSchema, { arguments: ["true"], platform: platform(["OSFamily", "linux"]) });
    expect(effectivePlatform(action, command)).toEqual([["network", "on"]]);
    expect(wantsNetwork({ action, command })).toBe(true);

    const closed = create(ActionSchema, { platform: platform(["OSFamily", "linux"]) });
    const asking = create(CommandSchema, { arguments: ["true"], platform: platform(["network", "on"]) });
    expect(wantsNetwork({ action: closed, command: asking })).toBe(false);
  });

  it("follows Command.platform from clients that set only that (REAPI before 2.2)", () => {
    const command = create(CommandSchema, { arguments: ["true"], platform: platform(["network", "on"], ["OSFamily", "linux"]) });
    expect(effectivePlatform(create(ActionSchema, {}), command)).toEqual([["OSFamily", "linux"], ["network", "on"]]);
    expect(wantsNetwork({ action: create(ActionSchema, {}), command })).toBe(true);
  });
});
