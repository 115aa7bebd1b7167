// The `filter` of the List methods: the search syntax (search-query.ts) evaluated on each
// resource of a page. Restrictions name a field path of the resource: `=` compares its value
// (enums by name), `:` tests membership in a repeated field (or a substring), comparisons work on
// numbers and RFC 3339 times; propertyEquals("k", "v") tests the resource's properties. As the
// proto says, every field a filter uses must also be in the response field mask.
import { toJson, type DescField, type DescMessage, type JsonObject, type JsonValue, type Message } from "@bufbuild/protobuf";
import { invalidArgument } from "../errors.ts";
import type { ResponseMask } from "./response-mask.ts";
import { parseQuery, type Node } from "./search-query.ts";

export type ListFilter = (msg: Message) => boolean;

/** Compiles `filter` for resources of `schema` listed under `collection` (e.g. "targets"). */
export function listFilter(filter: string, schema: DescMessage, collection: string, mask: ResponseMask): ListFilter {
  const tree = parseQuery(filter);
  if (!tree) return () => true;
  const check = (n: Node): void => {
    switch (n.k) {
      case "and":
      case "or":
        return n.parts.forEach(check);
      case "not":
        return check(n.part);
      case "fn":
        if (n.name !== "propertyEquals" || n.args.length !== 2) throw invalidArgument(`filter: only propertyEquals("key", "value") is supported as a function`, "filter");
        if (!schema.fields.some((f) => f.name === "properties")) throw invalidArgument(`filter: ${schema.typeName} has no properties for propertyEquals()`, "filter");
        if (!mask.covers(`${collection}.properties`)) throw invalidArgument(`filter: ${collection}.properties must be in the field mask`, "filter");
        return;
      case "cmp":
        if (!resolve(schema, n.field)) throw invalidArgument(`filter: "${n.field}" is not a field of ${schema.typeName}`, "filter");
        if (!mask.covers(`${collection}.${n.field}`)) throw invalidArgument(`filter: ${collection}.${n.field} must be in the field mask`, "filter");
        n.value = enumName(schema, n.field, n.value) ?? n.value;
    }
  };
  check(tree);
  return (msg) => evaluate(tree, toJson(schema, msg, { alwaysEmitImplicit: true }) as JsonObject, schema);
}

/**
 * For an enum field, the value's name (JSON renders enums by name), given its name in any case or
 * its number; INVALID_ARGUMENT when it is neither. Undefined for other fields.
 */
function enumName(schema: DescMessage, path: string, value: string): string | undefined {
  let msg: DescMessage | undefined = schema;
  let field: DescField | undefined;
  for (const seg of path.split(".")) {
    field = msg?.fields.find((x) => x.name === seg || x.jsonName === seg);
    msg = field && (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) ? field.message : undefined;
  }
  const e = field?.fieldKind === "enum" ? field.enum : field?.fieldKind === "list" && field.listKind === "enum" ? field.enum : undefined;
  if (!e) return undefined;
  const v = /^\d+$/.test(value) ? e.values.find((x) => x.number === Number(value)) : e.values.find((x) => x.name === value.toUpperCase());
  if (!v) throw invalidArgument(`filter: ${path} = ${value}: not one of ${e.values.map((x) => x.name).join(", ")}`, "filter");
  return v.name;
}

/** The JSON names along a field path, or null when it does not exist. */
function resolve(schema: DescMessage, path: string): string[] | null {
  const out: string[] = [];
  let msg: DescMessage | undefined = schema;
  for (const seg of path.split(".")) {
    const f: DescField | undefined = msg?.fields.find((x) => x.name === seg || x.jsonName === seg);
    if (!f) return null;
    out.push(f.jsonName);
    msg = f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message") ? f.message : undefined;
  }
  return out;
}

function valuesAt(json: JsonValue | undefined, keys: string[]): JsonValue[] {
  if (json === undefined || json === null) return [];
  if (Array.isArray(json)) return json.flatMap((e) => valuesAt(e, keys));
  if (keys.length === 0) return [json];
  if (typeof json !== "object") return [];
  return valuesAt((json as JsonObject)[keys[0]!], keys.slice(1));
}

function compare(a: JsonValue, op: string, b: string): boolean {
  const x = typeof a === "number" ? a : Date.parse(String(a));
  const y = typeof a === "number" ? Number(b) : Date.parse(b);
  if (!Number.isFinite(x) || !Number.isFinite(y)) return false;
  return op === "<" ? x < y : op === "<=" ? x <= y : op === ">" ? x > y : x >= y;
}

function evaluate(n: Node, json: JsonObject, schema: DescMessage): boolean {
  switch (n.k) {
    case "and":
      return n.parts.every((p) => evaluate(p, json, schema));
    case "or":
      return n.parts.some((p) => evaluate(p, json, schema));
    case "not":
      return !evaluate(n.part, json, schema);
    case "fn": {
      const props = (json["properties"] as JsonObject[] | undefined) ?? [];
      return props.some((p) => p["key"] === n.args[0] && p["value"] === n.args[1]);
    }
    case "cmp": {
      const values = valuesAt(json, resolve(schema, n.field)!);
      if (n.op === "=") return values.some((v) => String(v) === n.value);
      if (n.op === ":") return values.some((v) => String(v) === n.value || (typeof v === "string" && v.includes(n.value)));
      return values.some((v) => compare(v, n.op, n.value));
    }
  }
}
