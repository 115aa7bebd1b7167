// The parents of ResultStoreDownload's List methods: names whose ids may be `-` ("any"), as the
// API allows for targets and configured targets. Parsing yields the decoded ids (undefined for a
// wildcard); the resource such a parent names, when it names one, must exist.
import { invalidArgument } from "../errors.ts";

export type ParentShape = "invocation" | "target" | "configuredTarget";

export interface ParentIds {
  /** Lower case, as stored. */
  invocationId: string;
  /** undefined: the parent has no target id, or it is `-`. */
  targetId?: string;
  configId?: string;
}

const LITERALS: Record<ParentShape, string[]> = {
  invocation: ["invocations"],
  target: ["invocations", "targets"],
  configuredTarget: ["invocations", "targets", "configuredTargets"],
};

const wildcard = (id: string | undefined) => (id === "-" ? undefined : id);

/** Parses a parent name whose ids may be `-`; anything else is INVALID_ARGUMENT on `parent`. */
export function parentIds(parent: string, shape: ParentShape): ParentIds {
  const parts = parent.split("/");
  const expected = LITERALS[shape];
  if (parts.length !== expected.length * 2 || expected.some((l, i) => parts[2 * i] !== l) || parts.some((p, i) => i % 2 === 1 && !p)) {
    throw invalidArgument(`"${parent}" is not a valid parent (${expected.map((l) => `${l}/{id}`).join("/")})`, "parent");
  }
  let ids: string[];
  try {
    ids = parts.filter((_, i) => i % 2 === 1).map((s) => decodeURIComponent(s));
  } catch {
    throw invalidArgument(`"${parent}" has an id that is not url-encoded`, "parent");
  }
  return { invocationId: ids[0]!.toLowerCase(), targetId: wildcard(ids[1]), configId: wildcard(ids[2]) };
}

const enc = encodeURIComponent;

/**
 * The one resource a parent names (a target, or a configured target), which must exist; undefined
 * when its ids leave it open (`-`) or it is the invocation itself.
 */
export function namedParent({ invocationId, targetId, configId }: ParentIds): string | undefined {
  if (targetId === undefined) return undefined;
  const target = `invocations/${enc(invocationId)}/targets/${enc(targetId)}`;
  return configId === undefined ? target : `${target}/configuredTargets/${enc(configId)}`;
}
