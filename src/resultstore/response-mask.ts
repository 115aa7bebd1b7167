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

/** The call's response mask, validated against the response type; INVALID_ARGUMENT when absent. */
export function responseMask(ctx: HandlerContext, schema: DescMessage): ResponseMask {
  const raw = rawMask(ctx);
  if (!raw?.trim()) throw invalidArgument("a response field mask is required: the fields parameter or the X-Goog-FieldMask header", "fields");
  const root: Tree = new Map();
  let all = false;
  for (const path of raw.split(",").map((p) => p.trim()).filter(Boolean)) {
    if (path === "*") {
      all = true;
      continue;
    }
    let node = root;
    let msg: DescMessage | undefined = schema;
    const segs = path.split(".");
    segs.forEach((seg, i) => {
      const f = msg ? fieldOf(msg, seg) : undefined;
      if (!f) throw invalidArgument(`field mask: "${path}" does not name a field of ${schema.typeName}`, "fields");
      const last = i === segs.length - 1;
      const key = f.name;
      if (last) node.set(key, true);
      else {
        const next = node.get(key);
        if (next === true) return; // a shorter path already keeps it all
        const child: Tree = next ?? new Map();
        node.set(key, child);
        node = child;
        msg = f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message") ? f.message : undefined;
        if (!msg) throw invalidArgument(`field mask: "${path}" goes below a field that is not a message`, "fields");
      }
    });
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
