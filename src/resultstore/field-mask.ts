// update_mask on ResultStore resources. Update replaces every field under the mask and clears the
// ones the request leaves unset; Merge does the same except that repeated fields are appended to.
// UploadBatch additionally limits masks to the patterns listed in resultstore_upload.proto.
import { getOption, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import { isReflectMessage, reflect, type ReflectList, type ReflectMap, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { FieldBehavior, field_behavior } from "../gen/google/api/field_behavior_pb.ts";
import { FileSchema } from "../gen/google/devtools/resultstore/v2/file_pb.ts";
import { invalidArgument } from "../errors.ts";
import type { ResourceKind } from "./names.ts";

export type MaskMode = "update" | "merge";

/** The fields a path names, outermost first; every step but the last must be a singular message. */
function resolve(schema: DescMessage, path: string): DescField[] {
  const out: DescField[] = [];
  let msg: DescMessage | undefined = schema;
  for (const part of path.split(".")) {
    const field: DescField | undefined = msg?.fields.find((f) => f.name === part);
    if (!field) throw invalidArgument(`update_mask path "${path}" does not name a field of ${schema.name}`, "update_mask");
    out.push(field);
    msg = field.fieldKind === "message" ? field.message : undefined;
  }
  return out;
}

/** Checks the mask is present and every path names a field the client may set. */
export function checkMask(schema: DescMessage, paths: readonly string[] | undefined): string[] {
  if (!paths || paths.length === 0) throw invalidArgument("an update_mask is required", "update_mask");
  for (const p of paths) {
    const top = p.split(".")[0];
    if (top === "name" || top === "id") throw invalidArgument(`"${p}" is assigned by the server and cannot be updated`, "update_mask");
    resolve(schema, p);
  }
  return [...paths];
}

/** Field paths of singular scalars the proto marks IMMUTABLE (google.api.field_behavior), per message type. */
const immutables = new Map<DescMessage, DescField[][]>();

function immutablePaths(schema: DescMessage): DescField[][] {
  let paths = immutables.get(schema);
  if (!paths) immutables.set(schema, (paths = immutableBelow(schema, new Set([schema]))));
  return paths;
}

/** Through singular message fields; `above`, the types on the way down, stops a recursive type. */
function immutableBelow(schema: DescMessage, above: Set<DescMessage>): DescField[][] {
  const out: DescField[][] = [];
  for (const f of schema.fields) {
    if (f.fieldKind === "scalar" && getOption(f, field_behavior).includes(FieldBehavior.IMMUTABLE)) out.push([f]);
    else if (f.fieldKind === "message" && !above.has(f.message)) {
      out.push(...immutableBelow(f.message, new Set([...above, f.message])).map((p) => [f, ...p]));
    }
  }
  return out;
}

/** The scalar at `path`, or undefined when a message on the way is unset. */
function scalarAt(m: Message, schema: DescMessage, path: DescField[]): unknown {
  let r: ReflectMessage = reflect(schema, m);
  for (const f of path.slice(0, -1)) {
    if (!r.isSet(f)) return undefined;
    r = r.get(f) as ReflectMessage;
  }
  return r.get(path.at(-1)!);
}

/** Unset and proto3's zero value are the same to a client. */
const zero = (v: unknown) => v === undefined || v === "" || v === 0 || v === 0n || v === false;
const same = (a: unknown, b: unknown) => a === b || (zero(a) && zero(b));

/**
 * applyMask keeping the fields the proto marks IMMUTABLE (google.api.field_behavior) as they were
 * set at creation, e.g. Invocation.invocation_attributes.project_id: an update that leaves one
 * unset keeps it; one that sets it to another value is INVALID_ARGUMENT naming it.
 */
export function applyMaskKeepingImmutable(schema: DescMessage, target: Message, source: Message, paths: readonly string[], mode: MaskMode, field: string): void {
  const fixed = immutablePaths(schema).map((path) => ({ path, was: scalarAt(target, schema, path) }));
  applyMask(schema, target, source, paths, mode);
  for (const { path, was } of fixed) {
    const now = scalarAt(target, schema, path);
    if (same(now, was)) continue;
    const name = path.map((f) => f.name).join(".");
    if (!zero(now)) throw invalidArgument(`${name} is immutable: it is "${String(was ?? "")}" since the resource was created`, `${field}.${name}`);
    let r: ReflectMessage = reflect(schema, target);
    for (const f of path.slice(0, -1)) {
      if (!r.isSet(f)) r.set(f, reflect((f as DescField & { message: DescMessage }).message));
      r = r.get(f) as ReflectMessage;
    }
    r.set(path.at(-1)!, was);
  }
}

/** Applies the masked fields of `source` onto `target` (both of `schema`), in place. */
export function applyMask(schema: DescMessage, target: Message, source: Message, paths: readonly string[], mode: MaskMode): void {
  for (const path of paths) {
    const fields = resolve(schema, path);
    let dst: ReflectMessage = reflect(schema, target);
    let src: ReflectMessage | undefined = reflect(schema, source);
    for (const f of fields.slice(0, -1)) {
      // Intermediate messages: created on the target as needed; an unset source means "empty".
      if (!dst.isSet(f)) dst.set(f, reflect((f as DescField & { message: DescMessage }).message));
      dst = dst.get(f) as ReflectMessage;
      src = src && src.isSet(f) ? (src.get(f) as ReflectMessage) : undefined;
    }
    const last = fields[fields.length - 1]!;
    const has = src?.isSet(last) ?? false;
    if (last.fieldKind === "list") {
      if (mode === "update") dst.clear(last);
      if (!has) continue;
      const to = dst.get(last) as ReflectList;
      for (const item of src!.get(last) as ReflectList) {
        // A File whose uid is already in the list replaces that File (file.proto: uid).
        const at = mode === "merge" ? indexOfSameUid(to, item) : -1;
        if (at >= 0) to.set(at, item);
        else to.add(item);
      }
    } else if (last.fieldKind === "map") {
      if (mode === "update") dst.clear(last);
      if (has) for (const [k, v] of src!.get(last) as ReflectMap) (dst.get(last) as ReflectMap).set(k, v);
    } else if (has) {
      dst.set(last, src!.get(last));
    } else {
      dst.clear(last);
    }
  }
}

/** Where a File with the same uid as `item` sits in `list`; -1 if none, or if not Files. */
function indexOfSameUid(list: ReflectList, item: unknown): number {
  if (!isReflectMessage(item) || item.desc.typeName !== FileSchema.typeName) return -1;
  const uidField = item.desc.field.uid!;
  const uid = item.get(uidField);
  for (let i = 0; i < list.size; i++) {
    const other = list.get(i);
    if (isReflectMessage(other) && other.get(uidField) === uid) return i;
  }
  return -1;
}

/** "*" stands for any single field name, as the proto comment says. */
const BATCH_UPDATE: Record<ResourceKind, string[]> = {
  invocation: ["*", "status_attributes.*", "timing.*", "invocation_attributes.*", "workspace_info.*"],
  target: ["*", "status_attributes.*", "timing.*"],
  configuration: ["*", "status_attributes.*"],
  configuredTarget: ["*", "status_attributes.*"],
  action: ["*", "status_attributes.*", "timing.*", "test_action.test_suite", "test_action.infrastructure_failure_info"],
  fileSet: ["*"],
};

const BATCH_MERGE: Record<ResourceKind, string[]> = {
  invocation: ["invocation_attributes.labels", "workspace_info.command_lines", "properties", "files", "file_processing_errors"],
  target: ["files"],
  configuration: [],
  configuredTarget: ["files"],
  action: ["files", "file_processing_errors"],
  fileSet: [],
};

const matches = (pattern: string, path: string) => {
  const p = pattern.split(".");
  const q = path.split(".");
  return p.length === q.length && p.every((s, i) => s === "*" || s === q[i]);
};

/** UploadBatch accepts only the documented mask patterns per resource kind and operation. */
export function checkBatchMask(kind: ResourceKind, mode: MaskMode, paths: readonly string[], field: string): void {
  const allowed = (mode === "update" ? BATCH_UPDATE : BATCH_MERGE)[kind];
  for (const path of paths) {
    if (!allowed.some((pattern) => matches(pattern, path))) {
      throw invalidArgument(
        `UploadBatch does not allow the ${mode} mask path "${path}" on a ${kind}` + (allowed.length ? ` (allowed: ${allowed.join(", ")})` : ""),
        field,
      );
    }
  }
}
