// The HTTP headers a FetchBlob asks Kiln to send to its origins, from Bazel's three qualifier forms:
// - bazel.auth_headers (Bazel 5/6, when .netrc or auth patterns cover a URL): JSON, an object
//   mapping a URL to {header name: value, or [values]}; it applies to the URI equal to that URL.
// - http_header_url:N:NAME (Bazel 7/8): a header for uris[N] only.
// - http_header:NAME: a header for every URI.
// Per URI, http_header_url wins over bazel.auth_headers, which wins over http_header (Bazel's
// --remote_downloader_propagate_credentials says URL-specific headers take precedence).
// These are credentials: they are not part of an asset's key (the content does not depend on
// who may read it), and their values are never stored, logged or echoed in an error message.
import { invalidArgument } from "../errors.ts";

export const AUTH_HEADERS = "bazel.auth_headers";
const HTTP_HEADER = "http_header:";
const HTTP_HEADER_URL = "http_header_url:";

/** A header qualifier's name, whatever its form. */
export const isHeaderQualifier = (name: string) => name === AUTH_HEADERS || name.startsWith(HTTP_HEADER) || name.startsWith(HTTP_HEADER_URL);

/** The forms Bazel repeats, once per value of a header with several (all values are sent). */
export const isRepeatableHeaderQualifier = (name: string) => name.startsWith(HTTP_HEADER) || name.startsWith(HTTP_HEADER_URL);

/** RFC 9110 token: what a header name may be. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * Headers a qualifier may not set. Range and If-Range would have the origin send part of the
 * content, which would then be stored as the whole asset (headers are not in the key); Kiln's own
 * Accept-Encoding (identity) keeps the body's bytes those its Content-Length counts.
 */
const REFUSED = new Set(["range", "if-range", "accept-encoding"]);

/** [name, value] pairs in the order they apply; a later one replaces an earlier of the same name. */
type Pairs = [string, string][];

/** The qualifiers' headers, waiting for the URI they are sent to. */
export interface OriginHeaders {
  all: Pairs;
  byUrl: Map<string, Pairs>;
  byIndex: Map<number, Pairs>;
}

export const noHeaders = (): OriginHeaders => ({ all: [], byUrl: new Map(), byIndex: new Map() });

function header(qualifier: string, name: string, value: string): [string, string] {
  if (!TOKEN.test(name)) throw invalidArgument(`qualifier "${qualifier.slice(0, 200)}" names an invalid HTTP header "${name.slice(0, 200)}"`, "qualifiers.name");
  if (REFUSED.has(name.toLowerCase())) throw invalidArgument(`qualifier "${qualifier.slice(0, 200)}" sets ${name}, which Kiln does not forward (it would change the bytes stored)`, "qualifiers.name");
  // The value itself is a secret: the message says what is wrong with it, not what it is.
  if (/[\r\n\0]/.test(value)) throw invalidArgument(`qualifier "${qualifier.slice(0, 200)}": the value of header ${name} contains CR, LF or NUL`, "qualifiers.value");
  // A Headers value is bytes: a character past U+00FF cannot be sent (fetch would throw).
  if (/[^\u0000-\u00ff]/.test(value)) throw invalidArgument(`qualifier "${qualifier.slice(0, 200)}": the value of header ${name} has characters outside Latin-1`, "qualifiers.value");
  return [name, value];
}

/** Adds one header qualifier to `into`; INVALID_ARGUMENT, with the reason, if it is malformed. */
export function addHeaderQualifier(into: OriginHeaders, name: string, value: string, uriCount: number): void {
  if (name === AUTH_HEADERS) {
    for (const [url, pairs] of parseAuthHeaders(value)) into.byUrl.set(url, pairs);
    return;
  }
  if (name.startsWith(HTTP_HEADER_URL)) {
    const m = /^(\d+):(.*)$/s.exec(name.slice(HTTP_HEADER_URL.length));
    if (!m) throw invalidArgument(`qualifier "${name.slice(0, 200)}" is not http_header_url:<uri index>:<header name>`, "qualifiers.name");
    const index = Number(m[1]);
    if (index >= uriCount) throw invalidArgument(`qualifier "${name.slice(0, 200)}" names uris[${m[1]!.slice(0, 20)}]; the request has ${uriCount} URI(s)`, "qualifiers.name");
    const pairs = into.byIndex.get(index) ?? [];
    pairs.push(header(name, m[2]!, value));
    into.byIndex.set(index, pairs);
    return;
  }
  into.all.push(header(name, name.slice(HTTP_HEADER.length), value));
}

function parseAuthHeaders(value: string): Map<string, Pairs> {
  const bad = (why: string) => invalidArgument(`${AUTH_HEADERS} ${why}`, "qualifiers.value");
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    throw bad("is not valid JSON");
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObject(json)) throw bad("is not a JSON object mapping URLs to headers");
  const out = new Map<string, Pairs>();
  for (const [url, headers] of Object.entries(json)) {
    if (!isObject(headers)) throw bad(`maps a URL to something other than an object of headers`);
    const pairs: Pairs = [];
    for (const [name, v] of Object.entries(headers)) {
      // Bazel 5 sends a header's first value as a string; later versions send every value.
      const values = typeof v === "string" ? [v] : Array.isArray(v) && v.every((s) => typeof s === "string") ? (v as string[]) : null;
      if (!values) throw bad(`gives header ${name.slice(0, 200)} a value that is neither a string nor a list of strings`);
      for (const one of values) pairs.push(header(AUTH_HEADERS, name, one));
    }
    out.set(url, pairs);
  }
  return out;
}

/** The headers for uris[index]. */
export function headersFor(h: OriginHeaders, uri: string, index: number): Headers {
  const out = new Headers();
  const seen = new Set<string>();
  // Within one form, repeated values of a name are all sent (append); a more specific form replaces them.
  for (const pairs of [h.all, h.byUrl.get(uri) ?? [], h.byIndex.get(index) ?? []]) {
    seen.clear();
    for (const [name, value] of pairs) {
      if (seen.has(name.toLowerCase())) out.append(name, value);
      else out.set(name, value);
      seen.add(name.toLowerCase());
    }
  }
  return out;
}
