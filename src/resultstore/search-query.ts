// The query language of SearchInvocations and SearchConfiguredTargets (resultstore_download.proto),
// compiled to a parameterized SQL condition over the search index (search-index.ts).
//
//   query   := or
//   or      := and ("OR" and)*
//   and     := unary (["AND"] unary)*        juxtaposition means AND, as in the Google filter syntax
//   unary   := "NOT" unary | "(" or ")" | function | field op value
//   function:= name "(" value ("," value)* ")"
//   op      := "=" | ":" | "<" | "<=" | ">" | ">="
//   value   := "double quoted" | 'single quoted' | bare-word (which may contain ':' and '=')
//
// Each field allows only the operators the proto lists for it; anything else is INVALID_ARGUMENT
// naming the field. Without exact_match, string equals/contains ignore case and punctuation.
import { invalidArgument } from "../errors.ts";
import { Language, Status, UploadStatus } from "../gen/google/devtools/resultstore/v2/common_pb.ts";
import { TargetType, TestSize } from "../gen/google/devtools/resultstore/v2/target_pb.ts";

export type SearchKind = "invocation" | "configuredTarget";
type Op = "=" | ":" | "<" | "<=" | ">" | ">=";

/** Lower case, letters and digits only: what a loose string match compares. */
export const normalize = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}]/gu, "");

// ---- tokens ----

type Token = { t: "(" | ")" | "," | "op"; v: string } | { t: "word" | "string"; v: string };

function tokenize(q: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < q.length) {
    const ch = q[i]!;
    if (/\s/.test(ch)) {
      i++;
    } else if (ch === "(" || ch === ")" || ch === ",") {
      out.push({ t: ch, v: ch });
      i++;
    } else if (ch === '"' || ch === "'") {
      let s = "";
      let j = i + 1;
      for (; j < q.length && q[j] !== ch; j++) {
        if (q[j] === "\\" && j + 1 < q.length) j++;
        s += q[j];
      }
      if (j >= q.length) throw invalidArgument(`query: unterminated string starting at ${i}`, "query");
      out.push({ t: "string", v: s });
      i = j + 1;
    } else if ("=:<>!".includes(ch)) {
      const two = q.slice(i, i + 2);
      const op = two === "<=" || two === ">=" || two === "!=" ? two : ch;
      if (op === "!=" || op === "!") throw invalidArgument(`query: "${op}" is not supported (fields take =, : or comparisons, as the API lists)`, "query");
      out.push({ t: "op", v: op });
      i += op.length;
    } else {
      // A bare value right after an operator may hold ':' and '=' (Bazel labels such as //pkg:test,
      // RFC 3339 times); elsewhere those end a word.
      const afterOp = out.at(-1)?.t === "op";
      const stop = afterOp ? /[\s(),"']/ : /[\s()=:<>!,"']/;
      let j = i;
      while (j < q.length && !stop.test(q[j]!)) j++;
      out.push({ t: "word", v: q.slice(i, j) });
      i = j;
    }
  }
  return out;
}

// ---- syntax tree ----

export type Node =
  | { k: "and" | "or"; parts: Node[] }
  | { k: "not"; part: Node }
  | { k: "cmp"; field: string; op: Op; value: string }
  | { k: "fn"; name: string; args: string[] };

// ---- limits ----
// D1 binds at most 100 parameters per statement: a comparison binds one, a function two, and
// searchIndex adds up to 7 of its own, so 40 terms always fit. Nesting is bounded because the
// parser recurses once per level (a long NOT chain overflowed the stack) and SQLite refuses deep
// expression trees.

/** Longest query or filter text, in characters. */
export const MAX_QUERY_LENGTH = 8192;
/** Most comparisons and function calls in one query. */
export const MAX_QUERY_TERMS = 40;
/** Deepest nesting of parentheses and NOT. */
export const MAX_QUERY_DEPTH = 16;

/** Parses a query or list filter into its syntax tree (null when empty); INVALID_ARGUMENT on bad syntax. */
export function parseQuery(q: string): Node | null {
  if (q.length > MAX_QUERY_LENGTH) {
    throw invalidArgument(`query: ${q.length} characters is over the limit of ${MAX_QUERY_LENGTH} (MAX_QUERY_LENGTH)`, "query");
  }
  const toks = tokenize(q);
  let p = 0;
  let depth = 0;
  let terms = 0;
  const nest = <T>(inner: () => T): T => {
    if (++depth > MAX_QUERY_DEPTH) {
      throw invalidArgument(`query: parentheses and NOT nest deeper than the limit of ${MAX_QUERY_DEPTH} (MAX_QUERY_DEPTH)`, "query");
    }
    const out = inner();
    depth--;
    return out;
  };
  const term = <T>(node: T): T => {
    if (++terms > MAX_QUERY_TERMS) {
      throw invalidArgument(`query: more than ${MAX_QUERY_TERMS} terms (MAX_QUERY_TERMS); split the search`, "query");
    }
    return node;
  };
  const peek = () => toks[p];
  const isWord = (w: string) => peek()?.t === "word" && peek()!.v === w;
  const expect = (t: Token["t"]) => {
    const tok = toks[p++];
    if (tok?.t !== t) throw invalidArgument(`query: expected ${t === "op" ? "an operator" : `"${t}"`} ${tok ? `but found "${tok.v}"` : "at the end"}`, "query");
    return tok;
  };
  const value = () => {
    const tok = toks[p++];
    if (tok?.t !== "string" && tok?.t !== "word") throw invalidArgument(`query: expected a value ${tok ? `but found "${tok.v}"` : "at the end"}`, "query");
    return tok.v;
  };
  const or = (): Node => {
    const parts = [and()];
    while (isWord("OR")) {
      p++;
      parts.push(and());
    }
    return parts.length === 1 ? parts[0]! : { k: "or", parts };
  };
  const and = (): Node => {
    const parts = [unary()];
    for (;;) {
      if (isWord("AND")) {
        p++;
        parts.push(unary());
      } else if (peek() && peek()!.t !== ")" && !isWord("OR")) parts.push(unary());
      else break;
    }
    return parts.length === 1 ? parts[0]! : { k: "and", parts };
  };
  const unary = (): Node => {
    if (isWord("NOT")) {
      p++;
      return { k: "not", part: nest(unary) };
    }
    if (peek()?.t === "(") {
      p++;
      const inner = nest(or);
      expect(")");
      return inner;
    }
    const name = expect("word").v;
    if (peek()?.t === "(") {
      p++;
      const args = [value()];
      while (peek()?.t === ",") {
        p++;
        args.push(value());
      }
      expect(")");
      return term({ k: "fn", name, args });
    }
    const op = expect("op").v as Op;
    return term({ k: "cmp", field: name, op, value: value() });
  };
  if (toks.length === 0) return null;
  const tree = or();
  if (p < toks.length) throw invalidArgument(`query: unexpected "${toks[p]!.v}"`, "query");
  return tree;
}

// ---- fields ----

type Kind = "id" | "string" | "strings" | "time" | { enum: Record<string, string | number> };
interface Field {
  kind: Kind;
  /** SQL of the column (for "strings": a JSON array of [raw, normalized]). */
  col: string;
  /** Stored in lower case (invocation UUIDs), so compared so. */
  lower?: true;
}

const INVOCATION_FIELDS: Record<string, Field> = {
  "id.invocation_id": { kind: "id", col: "i.invocation_id", lower: true },
  name: { kind: "id", col: "i.name", lower: true },
  "status_attributes.status": { kind: { enum: Status }, col: "i.status" },
  "workspace_info.hostname": { kind: "string", col: "i.hostname" },
  "download_metadata.upload_status": { kind: { enum: UploadStatus }, col: "i.upload_status" },
  "invocation_attributes.users": { kind: "strings", col: "i.users" },
  "invocation_attributes.labels": { kind: "strings", col: "i.labels" },
  "timing.start_time": { kind: "time", col: "i.start_ms" },
};

const CONFIGURED_TARGET_FIELDS: Record<string, Field> = {
  "id.target_id": { kind: "id", col: "ct.target_id" },
  "status_attributes.status": { kind: { enum: Status }, col: "ct.status" },
  "target.target_attributes.type": { kind: { enum: TargetType }, col: "t.type" },
  "target.target_attributes.language": { kind: { enum: Language }, col: "t.language" },
  "target.test_attributes.size": { kind: { enum: TestSize }, col: "t.test_size" },
  "configuration.configuration_attributes.cpu": { kind: "string", col: "c.cpu" },
  "invocation.workspace_info.hostname": { kind: "string", col: "i.hostname" },
  "target.target_attributes.tags": { kind: "strings", col: "t.tags" },
  "invocation.invocation_attributes.users": { kind: "strings", col: "i.users" },
  "invocation.invocation_attributes.labels": { kind: "strings", col: "i.labels" },
  "timing.start_time": { kind: "time", col: "ct.start_ms" },
  coalesced_start_time: { kind: "time", col: "COALESCE(ct.start_ms, i.start_ms)" },
};

const FUNCTIONS: Record<SearchKind, Record<string, string>> = {
  invocation: { propertyEquals: "i.props" },
  configuredTarget: {
    invocationPropertyEquals: "i.props",
    targetPropertyEquals: "t.props",
    configurationPropertyEquals: "c.props",
    configuredTargetPropertyEquals: "ct.props",
  },
};

const opsOf = (k: Kind): Op[] => (k === "strings" ? [":"] : k === "time" ? ["<", "<=", ">", ">="] : ["="]);

function enumValue(field: string, e: Record<string, string | number>, v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : e[v.toUpperCase()];
  if (typeof n !== "number" || typeof e[n] !== "string") {
    const names = Object.keys(e).filter((k) => !/^\d+$/.test(k));
    throw invalidArgument(`query: ${field} = ${v}: not one of ${names.join(", ")}`, "query");
  }
  return n;
}

export interface CompiledQuery {
  sql: string;
  params: unknown[];
}

/**
 * Compiles `query` for `kind` (aliases: i = rs_invocations; for configured targets also ct, t, c).
 * An empty query matches everything, except for configured targets, where the API requires an
 * equals restriction on id.target_id (outside any OR or NOT).
 */
export function compileQuery(kind: SearchKind, query: string, exactMatch: boolean): CompiledQuery {
  const tree = parseQuery(query);
  const fields = kind === "invocation" ? INVOCATION_FIELDS : CONFIGURED_TARGET_FIELDS;
  if (kind === "configuredTarget") {
    const top = tree === null ? [] : tree.k === "and" ? tree.parts : [tree];
    if (!top.some((n) => n.k === "cmp" && n.field === "id.target_id" && n.op === "=")) {
      throw invalidArgument("query: a configured-target search must contain an equals restriction on id.target_id", "query");
    }
  }
  if (tree === null) return { sql: "1", params: [] };
  const params: unknown[] = [];
  const slot = exactMatch ? 0 : 1; // [raw, normalized]
  const text = (v: string) => (exactMatch ? v : normalize(v));
  const walk = (n: Node): string => {
    switch (n.k) {
      case "and":
      case "or":
        return `(${n.parts.map(walk).join(n.k === "and" ? " AND " : " OR ")})`;
      case "not":
        return `(NOT ${walk(n.part)})`;
      case "fn": {
        // Own keys only: a name every object inherits (constructor, toString) is no function here.
        const col = Object.hasOwn(FUNCTIONS[kind], n.name) ? FUNCTIONS[kind][n.name] : undefined;
        if (!col) throw invalidArgument(`query: unknown function ${n.name}(); supported: ${Object.keys(FUNCTIONS[kind]).join(", ")}`, "query");
        if (n.args.length !== 2) throw invalidArgument(`query: ${n.name}() takes a key and a value`, "query");
        params.push(n.args[0], n.args[1]);
        return `EXISTS (SELECT 1 FROM json_each(${col}) WHERE json_extract(value, '$[0]') = ? AND json_extract(value, '$[1]') = ?)`;
      }
      case "cmp": {
        const f = Object.hasOwn(fields, n.field) ? fields[n.field] : undefined;
        if (!f) throw invalidArgument(`query: ${n.field} cannot be searched; searchable: ${Object.keys(fields).join(", ")}`, "query");
        if (!opsOf(f.kind).includes(n.op)) {
          throw invalidArgument(`query: ${n.field} supports ${opsOf(f.kind).join(" ")} only, not ${n.op}`, "query");
        }
        if (f.kind === "id") {
          params.push(f.lower ? n.value.toLowerCase() : n.value);
          return `${f.col} = ?`;
        }
        if (f.kind === "string") {
          params.push(text(n.value));
          return `json_extract(${f.col}, '$[${slot}]') = ?`;
        }
        if (f.kind === "strings") {
          params.push(text(n.value));
          return `EXISTS (SELECT 1 FROM json_each(${f.col}) WHERE json_extract(value, '$[${slot}]') = ?)`;
        }
        if (f.kind === "time") {
          const t = Date.parse(n.value);
          if (!Number.isFinite(t)) throw invalidArgument(`query: ${n.field} ${n.op} ${n.value}: not an RFC 3339 time`, "query");
          params.push(t);
          return `${f.col} ${n.op} ?`;
        }
        params.push(enumValue(n.field, f.kind.enum, n.value));
        return `${f.col} = ?`;
      }
    }
  };
  return { sql: walk(tree), params };
}
