// One JSON access-log line per request, and the request id on the way in and out. The worker's
// fetch runs inside withAccessLog: the request gets x-request-id (cf-ray, else a fresh UUID), the
// response echoes it, REST-style JSON error bodies gain a google.rpc.RequestInfo detail carrying
// it (Connect and gRPC-web errors get theirs in surfaces/connect-errors.ts), and the line is
// written once the answer is known: at the response for plain HTTP (bytes from Content-Length;
// blob bodies are not counted, so R2 streams pass through untouched), at the end of the body for
// Connect streams and gRPC-web, whose status arrives in the last frame.
import { kilnEnv } from "./config.ts";
import { restErrorResponse } from "./errors.ts";
import { REQUEST_ID_HEADER, newRequestId, withRequestId } from "./request-id.ts";
import { Tally, settle, withTally } from "./metrics/request-tally.ts";

export interface AccessRecord {
  requestId: string;
  surface: string;
  /** The RPC ("ContentAddressableStorage.FindMissingBlobs") or the HTTP operation ("GET cas"). */
  method: string;
  httpMethod: string;
  path: string;
  status: number;
  /** The google.rpc.Code name, "OK" on success. */
  code: string;
  /** The API key's name, its tenant, and the instance name the call used (when it got that far). */
  key?: string;
  tenant?: string;
  instance?: string;
  bytesIn?: number;
  bytesOut?: number;
  ms: number;
  /** What the request counted (billed operations, cache hits); metrics/exposition.ts folds it in. */
  tally?: Tally;
}

type Notes = Partial<Pick<AccessRecord, "key" | "tenant" | "instance" | "method" | "code">> & {
  /** What oncePerRequest made for this request, by name. */
  once?: Map<string, unknown>;
};

/**
 * Notes of requests in flight, by a key only this worker sets (the request id may come from the
 * client locally, and workerd hands out a new Headers object per access, so neither can key it).
 */
const notes = new Map<string, Notes>();
const NOTES_KEY = "x-kiln-log-key";
/** Requests whose body was never read to its end are forgotten past this many. */
const MAX_PENDING = 10_000;

/** Lets the layer that learns something (the caller, the instance, the RPC, the code) record it. */
export function note(requestHeaders: Headers, fields: Notes): void {
  const n = notes.get(requestHeaders.get(NOTES_KEY) ?? "");
  if (n) Object.assign(n, fields);
}

/** Outside withAccessLog (tests that call a surface's handler directly): by Headers object. */
const onceByHeaders = new WeakMap<Headers, Map<string, unknown>>();

/**
 * `make()`'s result, made once per request however many layers ask (the rate count: the request
 * gate, the method's scope and a lane all look the caller up). Keyed like the notes: the Headers
 * objects of one request differ between layers (handler contexts copy them), so they cannot be.
 */
export function oncePerRequest<T>(requestHeaders: Headers, name: string, make: () => T): T {
  const n = notes.get(requestHeaders.get(NOTES_KEY) ?? "");
  let made: Map<string, unknown> | undefined;
  if (n) made = n.once ??= new Map();
  else if (!(made = onceByHeaders.get(requestHeaders))) onceByHeaders.set(requestHeaders, (made = new Map()));
  if (!made.has(name)) made.set(name, make());
  return made.get(name) as T;
}

/** Observers of finished requests (the /metrics counters). */
const observers: ((r: AccessRecord) => void)[] = [];
export const onRequestDone = (fn: (r: AccessRecord) => void) => void observers.push(fn);

const BLOB_PATH = /(^|\/)(blobs\/[^/]+\/\d+|uploads\/[^/]+\/blobs\/.+)$/;
const RPC_PATH = /^\/([a-z][\w]*(?:\.[a-z][\w]*)*)\.([A-Z]\w*)\/([A-Z]\w*)$/;

function classify(req: Request, url: URL): { surface: string; method: string } {
  const type = req.headers.get("content-type") ?? "";
  const rpc = RPC_PATH.exec(url.pathname);
  if (rpc && type.startsWith("application/grpc-web")) return { surface: "grpc-web", method: `${rpc[2]}.${rpc[3]}` };
  if (rpc) return { surface: "connect", method: `${rpc[2]}.${rpc[3]}` };
  if (url.pathname.startsWith("/cache/")) {
    const kind = /\/(ac|cas)\/[^/]*$/.exec(url.pathname)?.[1] ?? "other";
    return { surface: "http-cache", method: `${req.method} ${kind}` };
  }
  if (url.pathname === "/healthz" || url.pathname === "/metrics") return { surface: "admin", method: `${req.method} ${url.pathname}` };
  if (BLOB_PATH.test(url.pathname)) return { surface: "blob-http", method: `${req.method} blob` };
  return { surface: "rest", method: `${req.method} other` };
}

const HTTP_CODES: Record<number, string> = { 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 416: "OUT_OF_RANGE", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED" };
const codeOfStatus = (status: number) => (status < 400 ? "OK" : HTTP_CODES[status] ?? (status >= 500 ? "INTERNAL" : "UNKNOWN"));

const contentLength = (h: Headers) => {
  const v = h.get("content-length");
  return v === null ? undefined : Number(v);
};

/**
 * A response with another body (and headers). The status text is left out on purpose: an empty
 * statusText copied from the original would replace the reason phrase ("401 Unauthorized") that
 * workerd writes when none is given, and Bazel shows that phrase to the user.
 */
const rebuilt = (body: BodyInit | null, res: Response, headers: Headers = new Headers(res.headers)) =>
  new Response(body, { status: res.status, headers });

/** A REST-style JSON error ({"error": {...}}) with a RequestInfo detail added; other bodies as they are. */
async function withIdInErrorBody(res: Response, requestId: string): Promise<{ res: Response; code?: string }> {
  if (res.status < 400 || !res.body || !(res.headers.get("content-type") ?? "").startsWith("application/json")) return { res };
  const text = await res.text();
  let body: { error?: { status?: string; details?: Record<string, unknown>[] }; code?: string };
  try {
    body = JSON.parse(text);
  } catch {
    return { res: rebuilt(text, res) };
  }
  // A Connect error (already tagged), or a JSON answer that is not a REST error (/healthz).
  if (typeof body.error !== "object" || body.error === null) return { res: rebuilt(text, res), code: body.code?.toUpperCase() };
  const details = body.error.details ?? [];
  if (!details.some((d) => d["@type"] === "type.googleapis.com/google.rpc.RequestInfo")) {
    body.error.details = [...details, { "@type": "type.googleapis.com/google.rpc.RequestInfo", requestId }];
  }
  const out = JSON.stringify(body);
  const headers = new Headers(res.headers);
  headers.set("content-length", String(new TextEncoder().encode(out).byteLength));
  return { res: rebuilt(out, res, headers), code: body.error.status };
}

/** Counts a streamed body's bytes and calls `done` when it ends (or is abandoned). */
function counted(body: ReadableStream<Uint8Array>, done: (bytes: number) => void): ReadableStream<Uint8Array> {
  let bytes = 0;
  let finished = false;
  const finish = () => {
    if (!finished) done(bytes);
    finished = true;
  };
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        bytes += chunk.byteLength;
        ctl.enqueue(chunk);
      },
      flush: finish,
      cancel: finish,
    } as Transformer<Uint8Array, Uint8Array>),
  );
}

type FetchFn<E, C> = (req: Request, env: E, ctx: C) => Response | Promise<Response>;

export function withAccessLog<E, C>(fetch: FetchFn<E, C>): FetchFn<E, C> {
  return async (outer, env, ctx) => {
    const start = Date.now();
    const requestId = newRequestId(outer.headers);
    const notesKey = crypto.randomUUID();
    const headers = new Headers(outer.headers);
    headers.set(REQUEST_ID_HEADER, requestId);
    headers.set(NOTES_KEY, notesKey);
    const req = new Request(outer, { headers });
    const url = new URL(req.url);
    const n: Notes = {};
    if (notes.size >= MAX_PENDING) notes.delete(notes.keys().next().value!);
    notes.set(notesKey, n);
    let res: Response;
    const tally = new Tally();
    try {
      res = await withTally(tally, () => fetch(req, env, ctx));
    } catch (e) {
      res = restErrorResponse(withRequestId(e, requestId));
    }
    if (res.webSocket) {
      settle(tally, "websocket upgrade");
      return res; // an upgrade: its headers are the socket's, not ours to touch
    }
    const tagged = await withIdInErrorBody(res, requestId);
    res = tagged.res;
    const { surface, method } = classify(req, url);
    const finish = (bytesOut: number | undefined) => {
      notes.delete(notesKey);
      const record: AccessRecord = {
        requestId,
        surface,
        method: n.method ?? method,
        httpMethod: req.method,
        path: url.pathname.slice(0, 300),
        status: res.status,
        code: n.code ?? tagged.code ?? codeOfStatus(res.status),
        key: n.key,
        tenant: n.tenant,
        instance: n.instance,
        bytesIn: contentLength(req.headers),
        bytesOut,
        ms: Date.now() - start,
        tally,
      };
      if (kilnEnv().ACCESS_LOG !== "false") console.log(JSON.stringify({ type: "access", ...record, tally: undefined }));
      for (const o of observers) o(record);
    };
    const out = rebuilt(res.body, res);
    out.headers.set(REQUEST_ID_HEADER, requestId);
    const streamed = /^application\/(grpc-web|connect\+)/.test(res.headers.get("content-type") ?? "");
    if (!streamed || !out.body) {
      finish(contentLength(res.headers));
      return out;
    }
    return rebuilt(counted(out.body, finish), out);
  };
}
