// The fuzz suites' generators, free of any runtime binding so the workerd suites and the native
// gRPC suite (test/e2e, through the bridge) share them: a seeded generator (a failing case is
// reproduced by its seed and index), random messages built from descriptors, byte-level mutations.
import { create, toBinary, toJson, ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";

export interface Rng {
  (): number;
  int(n: number): number;
  pick<T>(xs: readonly T[]): T;
  chance(p: number): boolean;
  bytes(n: number): Uint8Array;
}

/** mulberry32: small, fast, and the same sequence on every run for one seed. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = (() => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }) as Rng;
  next.int = (n) => Math.floor(next() * n);
  next.pick = (xs) => xs[next.int(xs.length)]!;
  next.chance = (p) => next() < p;
  next.bytes = (n) => Uint8Array.from({ length: n }, () => next.int(256));
  return next;
}

const hex = (r: Rng, n: number) => Array.from({ length: n }, () => "0123456789abcdef"[r.int(16)]).join("");

/** A well-formed sha256 hex that no test stores: blobs named by it are always missing. */
export const missingHash = (r: Rng) => hex(r, 64);

/** Hash texts from valid-looking to broken. */
export const fuzzHash = (r: Rng) =>
  r.pick([
    () => missingHash(r),
    () => hex(r, r.int(80)),
    () => hex(r, 64).toUpperCase(),
    () => "g".repeat(64),
    () => "%zz" + hex(r, 61),
    () => "",
    () => hex(r, 63) + "%",
  ])();

/** Size texts: numbers, huge numbers, negatives, junk. */
export const fuzzSize = (r: Rng) =>
  r.pick(["0", "1", "3", "-1", "18446744073709551616", "9007199254740993", "1e3", "0x10", "", "abc", String(r.int(1 << 30))]);

/** Path segments that break decoding or naming rules. */
export const fuzzSegment = (r: Rng) =>
  r.pick(["fuzz", "a/b", "%", "%ZZ", "%E0%A4%A", "%C3%28", "%FF", "%2F", "..", ".", "blobs", "uploads", "operations", "", "x".repeat(300), "%00", "ü", "a%20b"]);

const STRINGS = [
  "", "a", "fuzz", "x/y", "%ZZ", "blobs", "../..", "\u0000", "ü\u{1F600}", "invocations/x", "operations/x", "a".repeat(3000),
  // Search queries and list filters: NOT chains, deep nesting, more terms than D1 can bind.
  "NOT ".repeat(3000) + "name = x",
  "(".repeat(2000) + "name = x" + ")".repeat(2000),
  Array.from({ length: 200 }, (_, i) => `name = n${i}`).join(" OR "),
  Array.from({ length: 60 }, (_, i) => `propertyEquals(k${i}, v)`).join(" "),
  "id.target_id = x AND " + Array.from({ length: 120 }, () => "NOT status_attributes.status = PASSED").join(" OR "),
];

function scalarValue(r: Rng, t: ScalarType, field: DescField): unknown {
  switch (t) {
    case ScalarType.STRING:
      if (/hash/.test(field.name)) return fuzzHash(r);
      return r.chance(0.3) ? hex(r, r.int(12)) : r.pick(STRINGS);
    case ScalarType.BYTES:
      return r.bytes(r.int(40));
    case ScalarType.BOOL:
      return r.chance(0.5);
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return r.pick([0, -1, 1.5, 1e308, Number.NaN]);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return r.pick([0n, 1n, -1n, 9223372036854775807n, -9223372036854775808n, BigInt(r.int(1 << 20))]);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return r.pick([0n, 1n, 18446744073709551615n, BigInt(r.int(1 << 20))]);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return r.pick([0, 1, 4294967295, r.int(1 << 16)]);
    default:
      return r.pick([0, 1, -1, 2147483647, -2147483648, r.int(1 << 16)]);
  }
}

function fieldValue(r: Rng, f: DescField, depth: number): unknown {
  const one = (): unknown => {
    if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")) {
      const e = f.enum!;
      return r.chance(0.8) ? r.pick(e.values).number : r.int(1000) - 10;
    }
    if (f.fieldKind === "message" && /^google\.protobuf\.\w+Value$/.test(f.message.typeName) && f.message.fields[0]?.fieldKind === "scalar") {
      // protobuf-es unboxes wrapper messages: the field takes the wrapped scalar.
      return scalarValue(r, f.message.fields[0].scalar, f);
    }
    if (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) {
      return randomMessage(f.message!, r, depth + 1);
    }
    const scalar = f.fieldKind === "scalar" ? f.scalar : f.fieldKind === "list" ? f.scalar! : ScalarType.STRING;
    return scalarValue(r, scalar, f);
  };
  if (f.fieldKind === "list") return Array.from({ length: r.int(4) }, one);
  return one();
}

/** A message of `desc` with random fields: valid protobuf, mostly nonsense to the service. */
export function randomMessage(desc: DescMessage, r: Rng, depth = 0): ReturnType<typeof create> {
  const init: Record<string, unknown> = {};
  if (depth < 3) {
    for (const f of desc.fields) {
      if (f.fieldKind === "map" || !r.chance(0.5)) continue;
      if (f.oneof) {
        if (init[f.oneof.localName]) continue;
        init[f.oneof.localName] = { case: f.localName, value: fieldValue(r, f, depth) };
      } else init[f.localName] = fieldValue(r, f, depth);
    }
  }
  try {
    return create(desc, init as never);
  } catch {
    return create(desc);
  }
}

/** The binary form of a random request, or of its JSON form as bytes. */
export function encode(desc: DescMessage, msg: ReturnType<typeof create>, json: boolean): Uint8Array {
  try {
    return json ? new TextEncoder().encode(JSON.stringify(toJson(desc, msg as never))) : toBinary(desc, msg as never);
  } catch {
    // A random Any or Value that protobuf-es will not encode: send the empty message instead.
    return json ? new TextEncoder().encode("{}") : new Uint8Array(0);
  }
}

/** A varint wider than 64 bits: no decoder may take it. */
export const HUGE_VARINT = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
/** Bytes that are not UTF-8 (overlong, lone continuation, truncated sequence). */
export const INVALID_UTF8 = Uint8Array.from([0xc0, 0xaf, 0x80, 0xe2, 0x82]);

const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
};
export { concat };

/**
 * Mutations that leave a message unparseable whatever it held, so a request that writes can never
 * be stored through them: a field header after the message that promises more than follows.
 */
export function breakMessage(r: Rng, bytes: Uint8Array): Uint8Array {
  return r.pick([
    () => concat(bytes, Uint8Array.of(0x0a), HUGE_VARINT), // field 1, length-delimited, length beyond 2^64
    () => concat(bytes, Uint8Array.of(0x0a, 0x7f), r.bytes(r.int(20))), // length 127, fewer bytes follow
    () => concat(bytes, Uint8Array.of(0x0f)), // field 1 with wire type 7, which does not exist
    () => concat(bytes, Uint8Array.of(0x00)), // field number 0
    () => concat(bytes, Uint8Array.of(0x08), HUGE_VARINT), // a varint value over 64 bits
    () => concat(bytes, Uint8Array.of(0x0a, INVALID_UTF8.byteLength + 10), INVALID_UTF8), // short string
  ])();
}

/** Any mutation, including ones that may leave a valid (different) message. */
export function mutate(r: Rng, bytes: Uint8Array): Uint8Array {
  return r.pick([
    () => breakMessage(r, bytes),
    () => bytes.slice(0, r.int(bytes.byteLength + 1)),
    () => {
      const b = bytes.slice();
      for (let i = 0; i < 1 + r.int(4) && b.byteLength > 0; i++) b[r.int(b.byteLength)] = r.int(256);
      return b;
    },
    () => concat(Uint8Array.of(0x0a, INVALID_UTF8.byteLength), INVALID_UTF8, bytes), // invalid UTF-8 in field 1
    () => r.bytes(r.int(64)),
    () => new Uint8Array(0),
  ])();
}

/** JSON bodies that are not the message: broken syntax, wrong types, deep nesting, not UTF-8. */
export function mutateJson(r: Rng, json: Uint8Array): Uint8Array {
  const text = new TextDecoder().decode(json);
  const enc = (s: string) => new TextEncoder().encode(s);
  return r.pick([
    () => json.slice(0, r.int(json.byteLength + 1)),
    () => enc(r.pick(['"a string"', "42", "null", "[]", "true", "1e999", '{"__proto__": {"x": 1}}'])),
    () => enc("[".repeat(5000) + "]".repeat(5000)),
    () => enc('{"a":'.repeat(3000) + "1" + "}".repeat(3000)),
    () => concat(enc('{"instanceName": "'), INVALID_UTF8, enc('"}')),
    () => enc(text.replace(/"[^"]*"\s*:\s*"[^"]*"/, (m) => m.replace(/:\s*"[^"]*"/, ": {}"))),
    () => enc(text.replace(/:\s*"[^"]*"/, ": 12345678901234567890123")),
    () => enc(text.replace(/\{/, '{"unknownField": 1, ')),
  ])();
}
