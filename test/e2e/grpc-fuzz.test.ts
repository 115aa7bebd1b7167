// Fuzz: native gRPC through the bridge, as raw HTTP/2 streams (a hostile client, not a well-behaved
// library): truncated and lying length-prefixed frames, compressed flags without an encoding,
// huge varints, bad resource names, wrong content types and paths. Seeded and reproducible: a
// failure names the case index. Asserts no server fault (HTTP 5xx, grpc-status INTERNAL, UNKNOWN
// or DATA_LOSS), no reset connection, a bridge and a worker that still answer, and nothing stored
// (no R2 Class A operation and no blob recorded in the CAS index, read from /metrics).
import http2 from "node:http2";
import type { DescMethod } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SERVICES } from "../../cli/bridge.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { HUGE_VARINT, breakMessage, concat, encode, fuzzSegment, mutate, randomMessage, rng, type Rng } from "../workers/fuzz-gen.ts";
import { startStack, type Stack } from "./stack.ts";

const SEED = 4242;
/** As many as each workerd surface gets (test/workers/fuzz-helpers.ts). */
const CASES = 10_000;
const CONCURRENCY = 32;

const methods: DescMethod[] = SERVICES.flatMap((s) => s.methods.filter((m) => m.methodKind !== "bidi_streaming"));
/** Methods that store something when their request is valid: they get only unparseable bodies. */
const WRITING = new Set(["BatchUpdateBlobs", "UpdateActionResult", "Write", "Execute"]);
const CONTENT_TYPES = ["application/grpc", "application/grpc+proto", "application/grpc+json", "application/json", "text/plain", "application/grpc-web", ""];
/** Fault codes: UNKNOWN, INTERNAL, DATA_LOSS. */
const FAULTS = new Set(["2", "13", "15"]);
/** The bridge's words for an HTTP 500 in front of the worker (Kiln itself answers gRPC-web with 200). */
const PROXY_LOST = "the worker answered HTTP 500";

interface Case {
  label: string;
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

const frame = (flags: number, declared: number, msg: Uint8Array) => {
  const head = new Uint8Array(5);
  head[0] = flags;
  new DataView(head.buffer).setUint32(1, declared);
  return concat(head, msg);
};

/** Resource names for ByteStream: the shapes the bridge and the worker parse by hand. */
const resourceName = (r: Rng) =>
  [r.pick(["", "inst", "a/b", "..", "%ZZ"]), r.pick(["blobs", "uploads/" + fuzzSegment(r) + "/blobs", "compressed-blobs/zstd", fuzzSegment(r)]), fuzzSegment(r), r.pick(["1", "-1", "99999999999999999999", "abc", ""])]
    .filter(Boolean)
    .join("/");

function grpcCase(r: Rng): Case {
  const m = r.pick(methods);
  const writing = WRITING.has(m.name);
  let msg = encode(m.input, randomMessage(m.input, r), false);
  if (m === ByteStream.method.read && r.chance(0.7)) {
    const name = new TextEncoder().encode(resourceName(r));
    msg = concat(Uint8Array.of(0x0a, Math.min(name.byteLength, 127)), name.subarray(0, 127)); // field 1: resource_name
  }
  msg = writing ? breakMessage(r, msg) : mutate(r, msg);
  const body = r.pick([
    () => frame(0, msg.byteLength, msg),
    () => frame(0, msg.byteLength, msg).subarray(0, r.int(5 + msg.byteLength)), // truncated frame
    () => frame(0, msg.byteLength + 1 + r.int(1000), msg), // a length that promises more
    () => frame(0, 0xffffffff, msg), // a 4 GiB message
    () => frame(1, msg.byteLength, msg), // "compressed", with no grpc-encoding
    () => concat(frame(0, msg.byteLength, msg), frame(0, msg.byteLength, msg)), // two messages to a unary method
    () => frame(r.pick([2, 0x80, 0xff]), msg.byteLength, msg), // flags nobody should send
    () => frame(0, HUGE_VARINT.byteLength + 1, concat(Uint8Array.of(0x08), HUGE_VARINT)), // a varint over 64 bits
    () => new Uint8Array(0),
  ])();
  const headers: Record<string, string> = { "content-type": r.chance(0.85) ? "application/grpc" : r.pick(CONTENT_TYPES) };
  if (r.chance(0.9)) headers.te = "trailers";
  if (r.chance(0.1)) headers["grpc-encoding"] = r.pick(["gzip", "identity", "zstd", "nope"]);
  if (r.chance(0.1)) headers["grpc-timeout"] = r.pick(["-1S", "abc", "99999999999H", "1n"]);
  if (r.chance(0.05)) headers.authorization = r.pick(["Bearer", "Bearer \u00ff", "Basic %%%", "x".repeat(5000)]);
  let path = `/${m.parent.typeName}/${m.name}`;
  if (r.chance(0.05)) path = r.pick([`/${m.parent.typeName}/Nope`, "/nope.Service/Method", "/", `/${m.parent.typeName}`, path + "/extra", "/%ZZ/x"]);
  return { label: `${path} ${headers["content-type"] || "(no type)"} ${body.byteLength} bytes`, path, headers, body };
}

interface Answer {
  status: number;
  grpcStatus?: string;
  message?: string;
}

function send(session: http2.ClientHttp2Session, c: Case): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": c.path, ...c.headers });
    const answer: Answer = { status: 0 };
    req.on("response", (h) => {
      answer.status = Number(h[":status"]);
      if (h["grpc-status"] !== undefined) answer.grpcStatus = String(h["grpc-status"]);
      answer.message = h["grpc-message"] as string | undefined;
    });
    req.on("trailers", (t) => {
      if (t["grpc-status"] !== undefined) answer.grpcStatus = String(t["grpc-status"]);
      answer.message = t["grpc-message"] as string | undefined;
    });
    req.on("data", () => {});
    req.on("end", () => resolve(answer));
    req.on("error", reject);
    req.setTimeout(60_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
    req.end(c.body);
  });
}

/**
 * Writes to the CAS counted so far: R2 Class A operations (every put and multipart step) and the
 * CAS index calls that record blobs (small blobs are stored by addSmall alone).
 */
async function casWrites(stack: Stack): Promise<number> {
  const text = await (await fetch(`${stack.httpUrl}/metrics`)).text();
  const series = /^(kiln_r2_operations_total\{class="A"[^}]*\}|kiln_do_requests_total\{object="CAS_INDEX",method="(?:add|addSmall)"[^}]*\}) (\d+)$/gm;
  return [...text.matchAll(series)].reduce((n, m) => n + Number(m[2]), 0);
}

describe("fuzz: native gRPC through the bridge", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it(`answers ${CASES} malformed gRPC requests without a server fault, a reset or a write`, { timeout: 10 * 60_000 }, async () => {
    const writesBefore = await casWrites(stack);
    const session = http2.connect(`http://${stack.grpcTarget}`);
    session.on("error", () => {}); // reported per stream below
    const faults: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < CASES) {
        const i = next++;
        const c = grpcCase(rng(SEED * 1_000_003 + i));
        try {
          const fault = (a: Answer) => a.status >= 500 || (a.grpcStatus !== undefined && FAULTS.has(a.grpcStatus));
          let a = await send(session, c);
          // wrangler dev's proxy in front of the worker now and then loses its connection to it
          // under load ("Network connection lost", an HTTP 500 of its own; seen once in a CI run).
          // Such a case is sent once more: the cases are deterministic, so a fault of Kiln's repeats.
          if (fault(a) && a.message === PROXY_LOST) a = await send(session, c);
          if (fault(a)) faults.push(`#${i} ${c.label}: HTTP ${a.status} grpc-status ${a.grpcStatus} ${a.message ?? ""}`);
        } catch (e) {
          faults.push(`#${i} ${c.label}: ${String(e)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    expect(session.destroyed, "the bridge dropped the connection").toBe(false);
    // The bridge still carries a well-formed call, and the worker still answers.
    const ok = await send(session, { label: "GetCapabilities", path: "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", headers: { "content-type": "application/grpc", te: "trailers" }, body: frame(0, 0, new Uint8Array(0)) });
    expect(ok.grpcStatus).toBe("0");
    session.close();
    expect((await fetch(`${stack.httpUrl}/healthz`)).status).toBe(200);
    // Every kind of fault once (by its message), then the first few cases.
    const kinds = new Map<string, string>();
    for (const f of faults) kinds.set(f.replace(/^#\d+ \S+ /, "").replace(/\d+ bytes/, "").slice(0, 160), f);
    expect(faults.length, [...kinds.values()].slice(0, 20).join("\n")).toBe(0);
    expect(await casWrites(stack)).toBe(writesBefore);
  });
});
