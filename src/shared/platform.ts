// The platform an action asks for, decided in one place for the worker (which places the action
// on a runner offering it) and the runner (which grants what it asks, e.g. the network): if the
// two read it differently, an action runs with more or less than it was placed for.
import type { Action, Command } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";

/**
 * Action.platform when the client set it (REAPI 2.2: "Servers SHOULD prefer those set here"),
 * else the deprecated Command.platform; as (name, value) pairs sorted by name, then value.
 */
export function effectivePlatform(action: Action, command: Command): [string, string][] {
  const props = (action.platform ?? command.platform)?.properties ?? [];
  return props.map((p): [string, string] => [p.name, p.value]).sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
}
