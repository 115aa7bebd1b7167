// Fuzz: malformed REST calls on every google.api.http route: path variables with bad
// %-encodings, query parameters of the wrong type, bodies that are not the message (JSON strings,
// numbers, arrays, deep nesting, broken syntax, not UTF-8), methods and verbs that do not fit.
import { getOption } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { http } from "../../src/gen/google/api/annotations_pb.ts";
import { services } from "../../src/services/registry.ts";
import {
  FUZZ_CASES,
  FUZZ_TIMEOUT_MS,
  INVALID_UTF8,
  WRITING_METHODS,
  concat,
  describeFaults,
  encode,
  fuzzSegment,
  mutateJson,
  randomMessage,
  runFuzz,
  type Case,
  type Rng,
} from "./fuzz-helpers.ts";
import type { DescMethod } from "@bufbuild/protobuf";

const SEED = 777;

interface Binding {
  verb: string;
  template: string;
  body: string;
  method: DescMethod;
}

const bindings: Binding[] = services.flatMap((s) =>
  s.service.methods.flatMap((method) => {
    const rule = getOption(method, http);
    return [rule, ...rule.additionalBindings]
      .filter((b) => b.pattern.case && b.pattern.case !== "custom")
      .map((b) => ({ verb: b.pattern.case!.toUpperCase(), template: b.pattern.value as string, body: b.body, method }));
  }),
);

function fillTemplate(r: Rng, template: string): string {
  return template.replace(/\{([^}=]+)(?:=([^}]*))?\}/g, (_, _f, pattern: string | undefined) =>
    (pattern ?? "*")
      .split("/")
      .map((seg) => (seg === "*" ? fuzzSegment(r) : seg === "**" ? Array.from({ length: r.int(3) }, () => fuzzSegment(r)).join("/") : seg))
      .join("/"),
  );
}

const QUERY_VALUES = ["", "abc", "-1", "99999999999999999999", "1.5", "true", "%ZZ", "null", "{}", "x".repeat(5000)];

function restCase(r: Rng): Case {
  const b = r.pick(bindings);
  const path = fillTemplate(r, b.template);
  const params = new URLSearchParams();
  for (let i = 0, n = r.int(4); i < n; i++) {
    const f = r.chance(0.7) && b.method.input.fields.length ? r.pick(b.method.input.fields).jsonName : r.pick(["pageSize", "page_size", "a.b.c", "fieldMask", "offset", "__proto__"]);
    params.append(f, r.pick(QUERY_VALUES));
  }
  const query = params.size ? `?${params}` : "";
  const verb = r.chance(0.9) ? b.verb : r.pick(["GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS"]);
  const headers: Record<string, string> = { "content-type": r.chance(0.9) ? "application/json" : r.pick(["text/plain", "application/proto", ""]) };
  let body: Uint8Array | undefined;
  if (verb !== "GET" && verb !== "HEAD" && (b.body || r.chance(0.2))) {
    const json = encode(b.method.input, randomMessage(b.method.input, r), true);
    // A writing method gets only bodies that cannot parse, so nothing is stored.
    body = WRITING_METHODS.has(b.method.name) ? concat(json.subarray(0, Math.max(0, json.byteLength - 1)), INVALID_UTF8) : mutateJson(r, json);
    if (r.chance(0.05)) headers["content-length"] = r.pick(["0", "999999999999", "-1"]);
  }
  // Raw paths: `new Request` would not re-encode a bad %-escape, which is the point.
  const url = `http://kiln${path.startsWith("/") ? "" : "/"}${path}${query}`;
  let request: Request;
  try {
    request = new Request(url, { method: verb, headers, body });
  } catch {
    request = new Request(`http://kiln${b.template.replace(/\{[^}]*\}/g, "x")}`, { method: verb, headers, body });
  }
  return { label: `${verb} ${url.slice(0, 160)} ${body?.byteLength ?? 0} bytes`, request };
}

describe("fuzz: REST", () => {
  it(`answers ${FUZZ_CASES.rest} malformed requests without a server fault and stores nothing`, { timeout: FUZZ_TIMEOUT_MS }, async () => {
    const { faults, stored } = await runFuzz(SEED, FUZZ_CASES.rest, restCase);
    expect(faults.length, describeFaults(faults)).toBe(0);
    expect(stored).toEqual([]);
  });
});
