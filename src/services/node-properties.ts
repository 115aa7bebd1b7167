// Output node properties (REAPI NodeProperties: "unix_mode", "mtime", ...) that runners record on
// outputs. Capabilities advertises exactly this list, and a Command that asks for anything else
// in output_node_properties is INVALID_ARGUMENT: a property silently dropped would give the
// client outputs it believes carry metadata they do not.
//
// The runner (container/runner/collect-outputs.ts) records both NodeProperties fields REAPI
// defines, on output files, symlinks and every Directory of an output tree.
import type { Command } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "../errors.ts";

/** Sorted by name, as Command.output_node_properties is. */
export const SUPPORTED_NODE_PROPERTIES: readonly string[] = ["mtime", "unix_mode"];

/** Refuses a Command whose output_node_properties name a property runners do not record. */
export function checkOutputNodeProperties(command: Pick<Command, "outputNodeProperties">): void {
  const unknown = command.outputNodeProperties.filter((p) => !SUPPORTED_NODE_PROPERTIES.includes(p));
  if (unknown.length === 0) return;
  const supported = SUPPORTED_NODE_PROPERTIES.length ? SUPPORTED_NODE_PROPERTIES.join(", ") : "none";
  throw invalidArgument(
    `output_node_properties ${unknown.map((p) => `"${p.slice(0, 80)}"`).join(", ")} not supported (supported: ${supported})`,
    "command.output_node_properties",
  );
}
