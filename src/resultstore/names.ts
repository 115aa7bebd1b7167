// ResultStore resource names: invocations/{inv}, …/targets/{t}, …/configuredTargets/{c},
// …/actions/{a}, invocations/{inv}/configs/{c}, invocations/{inv}/fileSets/{f}. Ids appear
// url-encoded (encodeURIComponent) in names, so a target id like "//pkg:t" cannot be confused with
// the name's own slashes; parsing decodes every id segment, so either spelling of a name is accepted
// and the canonical one is produced.
import { invalidArgument } from "../errors.ts";

export type ResourceKind = "invocation" | "target" | "configuration" | "configuredTarget" | "action" | "fileSet";

/** A resource's identity: its kind and decoded ids ("" where the kind has none). */
export interface ResourceKey {
  kind: ResourceKind;
  invocationId: string;
  targetId: string;
  configId: string;
  actionId: string;
  fileSetId: string;
}

export const keyOf = (kind: ResourceKind, invocationId: string, ids: Partial<Omit<ResourceKey, "kind" | "invocationId">> = {}): ResourceKey => ({
  kind,
  invocationId,
  targetId: ids.targetId ?? "",
  configId: ids.configId ?? "",
  actionId: ids.actionId ?? "",
  fileSetId: ids.fileSetId ?? "",
});

const enc = encodeURIComponent;

export function nameOf(k: ResourceKey): string {
  const inv = `invocations/${enc(k.invocationId)}`;
  switch (k.kind) {
    case "invocation":
      return inv;
    case "target":
      return `${inv}/targets/${enc(k.targetId)}`;
    case "configuredTarget":
      return `${inv}/targets/${enc(k.targetId)}/configuredTargets/${enc(k.configId)}`;
    case "action":
      return `${inv}/targets/${enc(k.targetId)}/configuredTargets/${enc(k.configId)}/actions/${enc(k.actionId)}`;
    case "configuration":
      return `${inv}/configs/${enc(k.configId)}`;
    case "fileSet":
      return `${inv}/fileSets/${enc(k.fileSetId)}`;
  }
}

/** The resource a creation of `k` needs to exist first (null for the invocation). */
export function parentOf(k: ResourceKey): ResourceKey | null {
  switch (k.kind) {
    case "invocation":
      return null;
    case "target":
    case "configuration":
    case "fileSet":
      return keyOf("invocation", k.invocationId);
    case "configuredTarget":
      return keyOf("target", k.invocationId, { targetId: k.targetId });
    case "action":
      return keyOf("configuredTarget", k.invocationId, { targetId: k.targetId, configId: k.configId });
  }
}

/** The key with every ancestor, outermost first, ending with k itself. */
export function lineageOf(k: ResourceKey): ResourceKey[] {
  const out: ResourceKey[] = [];
  for (let c: ResourceKey | null = k; c; c = parentOf(c)) out.unshift(c);
  return out;
}

function decode(segment: string, field: string): string {
  let id: string;
  try {
    id = decodeURIComponent(segment);
  } catch {
    throw invalidArgument(`"${segment}" is not a valid url-encoded id`, field);
  }
  if (!id) throw invalidArgument("a resource name has an empty id", field);
  return id;
}

const SHAPES: { kind: ResourceKind; literals: string[] }[] = [
  { kind: "invocation", literals: ["invocations"] },
  { kind: "target", literals: ["invocations", "targets"] },
  { kind: "configuration", literals: ["invocations", "configs"] },
  { kind: "fileSet", literals: ["invocations", "fileSets"] },
  { kind: "configuredTarget", literals: ["invocations", "targets", "configuredTargets"] },
  { kind: "action", literals: ["invocations", "targets", "configuredTargets", "actions"] },
];

const TEMPLATES: Record<ResourceKind, string> = {
  invocation: "invocations/{invocation}",
  target: "invocations/{invocation}/targets/{target}",
  configuration: "invocations/{invocation}/configs/{config}",
  fileSet: "invocations/{invocation}/fileSets/{file_set}",
  configuredTarget: "invocations/{invocation}/targets/{target}/configuredTargets/{config}",
  action: "invocations/{invocation}/targets/{target}/configuredTargets/{config}/actions/{action}",
};

/** Parses a resource name of the expected kind; anything else is INVALID_ARGUMENT naming `field`. */
export function parseName(name: string, expected: ResourceKind, field: string): ResourceKey {
  const parts = name.split("/");
  const shape = SHAPES.find((s) => s.kind === expected)!;
  const ok = parts.length === shape.literals.length * 2 && shape.literals.every((l, i) => parts[2 * i] === l);
  if (!ok) throw invalidArgument(`"${name}" is not a ${expected} name (${TEMPLATES[expected]})`, field);
  const ids = parts.filter((_, i) => i % 2 === 1).map((s) => decode(s, field));
  const [invocationId, a, b, c] = ids as [string, string?, string?, string?];
  switch (expected) {
    case "invocation":
      return keyOf(expected, invocationId);
    case "target":
      return keyOf(expected, invocationId, { targetId: a });
    case "configuration":
      return keyOf(expected, invocationId, { configId: a });
    case "fileSet":
      return keyOf(expected, invocationId, { fileSetId: a });
    case "configuredTarget":
      return keyOf(expected, invocationId, { targetId: a, configId: b });
    case "action":
      return keyOf(expected, invocationId, { targetId: a, configId: b, actionId: c });
  }
}

/** The stored spelling of a name (ids url-encoded, the invocation's UUID in lower case), whatever spelling the client used. */
export function canonicalName(name: string, kind: ResourceKind, field = "name"): string {
  const k = parseName(name, kind, field);
  return nameOf({ ...k, invocationId: k.invocationId.toLowerCase() });
}

/** invocations/{inv}/uploadMetadata -> the invocation id. */
export function parseUploadMetadataName(name: string): string {
  const m = /^invocations\/([^/]+)\/uploadMetadata$/.exec(name);
  if (!m) throw invalidArgument(`"${name}" is not an upload metadata name (invocations/{invocation}/uploadMetadata)`, "name");
  return decode(m[1]!, "name");
}
