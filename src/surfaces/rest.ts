// The JSON REST surface, derived from the google.api.http options in the protos: every method of
// every registered service gets its routes, path/query/body bound as the annotations say.
// Server streams are rendered as one JSON array, an element per message, written as they come;
// an error after the first message ends the array with {"error": {...}}.
import {
  create,
  createRegistry,
  fromJson,
  getOption,
  toJson,
  type DescField,
  type DescMessage,
  type DescMethod,
  type JsonObject,
  type JsonValue,
} from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type { Hono } from "hono";
import { http } from "../gen/google/api/annotations_pb.ts";
import type { HttpRule } from "../gen/google/api/http_pb.ts";
import { file_google_rpc_error_details } from "../gen/google/rpc/error_details_pb.ts";
import { asConnectError, invalidArgument, restErrorBody, restErrorResponse } from "../errors.ts";
import { serviceFiles, services } from "../services/registry.ts";
import { note } from "../access-log.ts";
import { requireCaller } from "../caller.ts";
import { MAX_JSON_BODY } from "../services/limits.ts";
import { readBodyBounded } from "./body.ts";
import { contextFor } from "./handler-context.ts";
import { compileTemplate, matchTemplate, type CompiledTemplate } from "./rest-template.ts";

/** A service allowing larger messages (UploadBatch): its JSON may be ~3x the binary size. */
const maxJsonBodyFor = (maxRequestBytes: number | undefined) => (maxRequestBytes ? Math.max(MAX_JSON_BODY, 3 * maxRequestBytes) : MAX_JSON_BODY);

interface Route {
  verb: string;
  template: CompiledTemplate;
  body: string;
  method: DescMethod;
  call: (req: unknown, ctx: HandlerContext) => unknown;
  maxBody: number;
  /** The template ends in a custom verb. */
  customVerb: boolean;
}

const registry = createRegistry(file_google_rpc_error_details, ...serviceFiles());

function bindingsOf(rule: HttpRule): HttpRule[] {
  return [rule, ...rule.additionalBindings];
}

function buildRoutes(): Route[] {
  const routes: Route[] = [];
  for (const { service, impl, maxRequestBytes } of services) {
    for (const method of service.methods) {
      const rule = getOption(method, http);
      const fn = (impl as Record<string, (r: unknown, c: HandlerContext) => unknown>)[method.localName];
      if (!fn || !rule.pattern.case) continue;
      for (const b of bindingsOf(rule)) {
        if (!b.pattern.case || b.pattern.case === "custom") continue;
        routes.push({
          verb: b.pattern.case.toUpperCase(),
          template: compileTemplate(b.pattern.value as string),
          customVerb: /:[A-Za-z]\w*$/.test(b.pattern.value as string),
          body: b.body,
          method,
          call: fn.bind(impl),
          maxBody: maxJsonBodyFor(maxRequestBytes),
        });
      }
    }
  }
  // A route ending in a custom verb ("…/fileSets/*}:traverseFileSets") goes before the plain ones:
  // a `*` segment would otherwise swallow the verb ("fs:traverseFileSets" read as a file set id).
  return routes.sort((x, y) => Number(y.customVerb) - Number(x.customVerb));
}

const routes = buildRoutes();

/** Sets a dotted field path in a JSON object, converting the text to the field's JSON type. */
function setPath(schema: DescMessage, obj: JsonObject, path: string, value: string) {
  const parts = path.split(".");
  let msg: DescMessage = schema;
  let target = obj;
  for (let i = 0; i < parts.length; i++) {
    const field: DescField | undefined = msg.fields.find((f) => f.name === parts[i] || f.jsonName === parts[i]);
    if (!field) throw invalidArgument(`unknown field "${path}"`, path);
    if (i === parts.length - 1) {
      const json = scalarJson(field, value, path);
      if (field.fieldKind === "list") {
        const list = target[field.jsonName] ?? [];
        if (!Array.isArray(list)) throw invalidArgument(`"${path}" is a repeated field; the body gave it a single value`, path);
        list.push(json);
        target[field.jsonName] = list;
      } else target[field.jsonName] = json;
      return;
    }
    if (field.fieldKind !== "message") throw invalidArgument(`"${path}" does not name a message field`, path);
    // The body may have put a string or number where the path binds into a message.
    const inner = (target[field.jsonName] ??= {});
    if (typeof inner !== "object" || inner === null || Array.isArray(inner)) {
      const at = parts.slice(0, i + 1).join(".");
      throw invalidArgument(`"${at}" must be a JSON object, not ${Array.isArray(inner) ? "an array" : typeof inner}`, at);
    }
    target = inner;
    msg = field.message;
  }
}

/** Well-known messages whose proto3 JSON form is a string, so a query parameter can carry them. */
const STRING_JSON_MESSAGES = new Set(["google.protobuf.FieldMask", "google.protobuf.Timestamp", "google.protobuf.Duration"]);

function scalarJson(field: DescField, value: string, path: string): JsonValue {
  if (field.fieldKind === "message" && STRING_JSON_MESSAGES.has(field.message.typeName)) return value;
  if (field.fieldKind === "message") throw invalidArgument(`"${path}" is a message, not a value`, path);
  const scalar = field.fieldKind === "scalar" || field.fieldKind === "list" ? field.scalar : undefined;
  if (scalar === 8 /* BOOL */) {
    if (value !== "true" && value !== "false") throw invalidArgument(`"${path}" must be true or false`, path);
    return value === "true";
  }
  if (scalar !== undefined && [5, 13, 17, 7, 15, 2, 1].includes(scalar)) {
    // 32-bit ints and floats are JSON numbers; 64-bit ints stay strings, as proto3 JSON allows.
    const n = Number(value);
    if (value === "" || Number.isNaN(n)) throw invalidArgument(`"${path}" must be a number`, path);
    return n;
  }
  return value;
}

async function requestJson(req: Request, route: Route, bindings: Map<string, string>, url: URL): Promise<JsonObject> {
  let obj: JsonObject = {};
  if (route.body) {
    // Strangers are refused before their body is read (read at all, and read up to the limit).
    await requireCaller(req.headers, req.url);
    const bytes = await readBodyBounded(req, route.maxBody, "MAX_JSON_BODY");
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
    } catch {
      throw invalidArgument("the request body is not UTF-8");
    }
    let parsed: JsonValue = {};
    if (text.trim()) {
      try {
        parsed = JSON.parse(text) as JsonValue;
      } catch {
        throw invalidArgument("the request body is not valid JSON");
      }
    }
    if (route.body === "*") {
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw invalidArgument("the request body must be a JSON object");
      obj = parsed as JsonObject;
    } else {
      const f = route.method.input.fields.find((x) => x.name === route.body);
      obj[f?.jsonName ?? route.body] = parsed;
    }
  }
  // Fields bound by neither the path nor the body come from the query (none when the body is "*").
  if (route.body !== "*") {
    for (const [k, v] of url.searchParams) {
      if (k === "$alt" || k === "alt" || k === "fields" || k === "key") continue;
      setPath(route.method.input, obj, k, v);
    }
  }
  for (const [path, value] of bindings) setPath(route.method.input, obj, path, value);
  return obj;
}

const jsonHeaders = { "content-type": "application/json" };

function outputJson(schema: DescMessage, msg: unknown): JsonValue {
  return toJson(schema, create(schema, msg as never), { registry });
}

async function serve(req: Request, route: Route, bindings: Map<string, string>, url: URL): Promise<Response> {
  note(req.headers, { method: `${route.method.parent.name}.${route.method.name}` });
  const json = await requestJson(req, route, bindings, url);
  let input: unknown;
  try {
    input = fromJson(route.method.input, json, { registry });
  } catch (e) {
    throw invalidArgument(`the request does not fit ${route.method.input.typeName}: ${(e as Error).message}`);
  }
  const ctx = contextFor(req, route.method, "rest");
  if (route.method.methodKind === "unary") {
    const out = await route.call(input, ctx);
    return new Response(JSON.stringify(outputJson(route.method.output, out)), { headers: jsonHeaders });
  }
  if (route.method.methodKind !== "server_streaming") throw invalidArgument("this method is not available over REST");
  const it = (route.call(input, ctx) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  // Pull the first message before answering, so an early error still gets its HTTP status.
  const first = await it.next();
  const enc = new TextEncoder();
  const output = route.method.output;
  const body = new ReadableStream<Uint8Array>({
    start(ctl) {
      ctl.enqueue(enc.encode("[" + (first.done ? "" : JSON.stringify(outputJson(output, first.value)))));
      if (first.done) {
        ctl.enqueue(enc.encode("]"));
        ctl.close();
      }
    },
    async pull(ctl) {
      try {
        const n = await it.next();
        if (n.done) {
          ctl.enqueue(enc.encode("]"));
          ctl.close();
        } else ctl.enqueue(enc.encode("," + JSON.stringify(outputJson(output, n.value))));
      } catch (e) {
        ctl.enqueue(enc.encode("," + JSON.stringify(restErrorBody(asConnectError(e))) + "]"));
        ctl.close();
      }
    },
    cancel() {
      void it.return?.();
    },
  });
  return new Response(body, { headers: jsonHeaders });
}

export function mountRest(app: Hono) {
  app.use("*", async (c, next) => {
    const url = new URL(c.req.url);
    for (const route of routes) {
      if (route.verb !== c.req.method && !(c.req.method === "HEAD" && route.verb === "GET")) continue;
      const bindings = matchTemplate(route.template, url.pathname);
      if (!bindings) continue;
      try {
        return await serve(c.req.raw, route, bindings, url);
      } catch (e) {
        // A body left unread is read to its end by answerAfterBody before this answer goes out.
        return restErrorResponse(e);
      }
    }
    return next();
  });
}
