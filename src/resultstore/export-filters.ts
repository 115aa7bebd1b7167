// ExportInvocation's filters. The proto describes each as a restriction to one id
// (`id.target_id = "…"` and so on); that is what is supported, and a narrower filter needs the
// wider ones (actions need a target and a configuration). Anything else is INVALID_ARGUMENT
// naming the filter.
import { invalidArgument } from "../errors.ts";

export interface ExportFilters {
  targetId?: string;
  configId?: string;
  actionId?: string;
}

/** The id a filter restricts `field` to; undefined for an empty filter. */
function restriction(filter: string, field: string, param: string): string | undefined {
  if (!filter.trim()) return undefined;
  const m = new RegExp(`^\\s*${field.replace(/\./g, "\\.")}\\s*=\\s*(?:"([^"]*)"|(\\S+))\\s*$`).exec(filter);
  if (!m) throw invalidArgument(`${param}: only a single ${field} = "…" restriction is supported`, param);
  return m[1] ?? m[2];
}

export function exportFilters(req: { targetsFilter: string; configuredTargetsFilter: string; actionsFilter: string }): ExportFilters {
  const targetId = restriction(req.targetsFilter, "id.target_id", "targets_filter");
  const configId = restriction(req.configuredTargetsFilter, "id.configuration_id", "configured_targets_filter");
  const actionId = restriction(req.actionsFilter, "id.action_id", "actions_filter");
  if (configId !== undefined && targetId === undefined) throw invalidArgument("configured_targets_filter requires targets_filter", "configured_targets_filter");
  if (actionId !== undefined && (targetId === undefined || configId === undefined)) {
    throw invalidArgument("actions_filter requires targets_filter and configured_targets_filter", "actions_filter");
  }
  return { targetId, configId, actionId };
}
