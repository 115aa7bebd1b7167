// Response field masks of ResultStoreDownload: most methods require one ("If no field mask was
// given" is an error in the proto), from the X-Goog-FieldMask header (gRPC metadata
// x-goog-fieldmask) or, on REST, the `fields` query parameter. Paths name proto fields in
// snake_case or their JSON names, dot-separated through messages and repeated messages; `*` keeps all.
import { fromJson, toJson, type DescField, type DescMessage, type JsonObject, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { invalidArgument } from "../errors.ts";

type Tree = Map<string, Tree | true>;

export interface ResponseMask {
  /** Whether `path` (dot-separated, from the response root) is kept by the mask. */
  covers(path: string): boolean;
  apply<D extends DescMessage>(schema: D, msg: MessageShape<D>): MessageShape<D>;
}

const fieldOf = (schema: DescMessage, seg: string): DescField | undefined =>
  schema.fields.find((f) => f.name === seg || f.jsonName === seg);

/** The raw mask a call carries, or undefined. */
function rawMask(ctx: HandlerContext): string | undefined {
  const header = ctx.requestHeader.get("x-goog-fieldmask");
  if (header) return header;
  return new URL(ctx.url, "http://kiln").searchParams.get("fields") ?? undefined;
}

/**
 * The call's response mask, validated against the response type; INVALID_ARGUMENT when absent.
 * `only` (snake_case paths) limits what may be asked for, where the API supports masks on just
 * some fields: `*` and a path above them mean those fields, anything else is refused.
 */
export function responseMask(ctx: HandlerContext, schema: DescMessage, only?: string[]): ResponseMask {
  return parseResponseMask(rawMask(ctx), schema, only);
}

/** The call's response mask where the method does not require one: undefined when none was given. */
export function optionalResponseMask(ctx: HandlerContext, schema: DescMessage): ResponseMask | undefined {
  const raw = rawMask(ctx);
  return raw?.trim() ? parseResponseMask(raw, schema) : undefined;
}

/** The snake_case spelling of a mask path, or INVALID_ARGUMENT when it names no field of `schema`. */
function canonicalPath(schema: DescMessage, path: string): string {
  let msg: DescMessage | undefined = schema;
  const out: string[] = [];
  for (const seg of path.split(".")) {
    if (!msg) throw invalidArgument(`field mask: "${path}" goes below a field that is not a message`, "fields");
    // Well-known types (Timestamp, Duration, wrappers, ...) are strings or scalars in the JSON the
    // mask prunes, so they are kept or left out whole; a path inside one would prune a string.
    if (msg !== schema && msg.typeName.startsWith("google.protobuf.")) {
      throw invalidArgument(`field mask: "${path}" goes inside ${msg.typeName}, which is kept or left out whole`, "fields");
    }
    const f = fieldOf(msg, seg);
    if (!f) throw invalidArgument(`field mask: "${path}" does not name a field of ${schema.typeName}`, "fields");
    out.push(f.name);
    msg = f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message") ? f.message : undefined;
  }
  return out.join(".");
}

/** The paths a mask keeps when only `only` may be asked for. */
function restrict(paths: string[], only: string[], all: boolean): string[] {
  if (all) return only;
  return paths.flatMap((p) => {
    if (only.some((o) => p === o || p.startsWith(`${o}.`))) return [p];
    const below = only.filter((o) => o.startsWith(`${p}.`));
    if (below.length) return below;
    throw invalidArgument(`field mask: "${p}" is not supported here; supported: ${only.join(", ")}`, "fields");
  });
}

/** A mask from its raw text (comma-separated paths); INVALID_ARGUMENT when absent or invalid. */
export function parseResponseMask(raw: string | undefined, schema: DescMessage, only?: string[]): ResponseMask {
  const listed = (raw ?? "").split(",").map((p) => p.trim()).filter(Boolean);
  if (!listed.length) throw invalidArgument("a response field mask is required: the fields parameter or the X-Goog-FieldMask header", "fields");
  let all = listed.includes("*");
  let paths = listed.filter((p) => p !== "*").map((p) => canonicalPath(schema, p));
  if (only) {
    paths = restrict(paths, only, all);
    all = false;
  }
  const root: Tree = new Map();
  for (const path of paths) {
    let node = root;
    const segs = path.split(".");
    for (const [i, seg] of segs.entries()) {
      if (i === segs.length - 1) {
        node.set(seg, true);
        break;
      }
      const next = node.get(seg);
      if (next === true) break; // a shorter path already keeps it all
      const child: Tree = next ?? new Map();
      node.set(seg, child);
      node = child;
    }
  }
  const covers = (path: string) => {
    if (all) return true;
    let node: Tree | true | undefined = root;
    let msg: DescMessage | undefined = schema;
    for (const seg of path.split(".")) {
      if (node === true) return true;
      const f: DescField | undefined = msg ? fieldOf(msg, seg) : undefined;
      node = node.get(f?.name ?? seg);
      if (node === undefined) return false;
      msg = f && (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) ? f.message : undefined;
    }
    return true;
  };
  return {
    covers,
    apply(s, m) {
      if (all) return m;
      return fromJson(s, prune(s, toJson(s, m) as JsonObject, root) as JsonValue) as MessageShape<typeof s>;
    },
  };
}

function prune(schema: DescMessage, json: JsonObject, tree: Tree): JsonObject {
  const out: JsonObject = {};
  for (const [name, sub] of tree) {
    const f = fieldOf(schema, name)!;
    const v = json[f.jsonName];
    if (v === undefined) continue;
    if (sub === true) out[f.jsonName] = v;
    else if (Array.isArray(v)) out[f.jsonName] = v.map((e) => prune(f.message!, e as JsonObject, sub));
    else out[f.jsonName] = prune(f.message!, v as JsonObject, sub);
  }
  return out;
}
