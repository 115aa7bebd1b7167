// The workerd fuzz suites' shared parts: the generators (fuzz-gen.ts, re-exported), the methods
// the surfaces route, and a runner that sends the cases to the worker and reports every answer
// that is a server fault.
import { SELF, createExecutionContext, env } from "cloudflare:test";
import worker from "../../src/index.ts";
import type { DescMethod } from "@bufbuild/protobuf";
import { services } from "../../src/services/registry.ts";
import { rng, type Rng } from "./fuzz-gen.ts";
import { casIndexRows } from "./helpers.ts";

export * from "./fuzz-gen.ts";

/** Cases per surface, fixed so runs are comparable. */
export const FUZZ_CASES = { connect: 10_000, grpcWeb: 10_000, rest: 10_000, httpCache: 10_000, blobHttp: 10_000 } as const;
/**
 * A suite's time bound. 10,000 cases cost about 10 s of CPU (plain HTTP) to 30 s (Connect,
 * gRPC-web), measured on the shared 2-core machine; wall time there was up to 8 times that.
 */
export const FUZZ_TIMEOUT_MS = 600_000;
/** Requests in flight at once. */
const CONCURRENCY = 32;
/**
 * Every VIA_HTTP-th case goes through SELF (workerd's HTTP layer: Content-Length checks, bodies
 * answered before they are read); the others call the worker's fetch directly, which halves the
 * cost of a case (the HTTP hop was ~2.5 ms of ~5 on the shared 2-core machine).
 */
const VIA_HTTP = 5;

/** The worker's fetch as workerd calls it, without the HTTP hop. */
const direct = (req: Request) => Promise.resolve(worker.fetch(req, env as never, createExecutionContext()));

/** The unary and server-streaming methods of every service, as the surfaces route them. */
export const unaryMethods: DescMethod[] = services.flatMap((s) =>
  s.service.methods.filter((m) => m.methodKind === "unary" || m.methodKind === "server_streaming"),
);

/** Methods that store something when their request is valid: fuzzed only with breakMessage. */
export const WRITING_METHODS = new Set(["BatchUpdateBlobs", "UpdateActionResult", "Write", "Execute", "PushBlob", "PushDirectory"]);

export interface Case {
  /** Says what was sent, for the failure report. */
  label: string;
  request: Request;
}

export interface Fault {
  index: number;
  label: string;
  detail: string;
}

async function allObjectKeys(): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.CAS.list({ cursor, limit: 1000 });
    keys.push(...page.objects.map((o) => o.key));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  // Small blobs have no object: they are rows of the CAS index.
  for (const hash of await casIndexRows()) keys.push(`index:default/${hash}`);
  return keys.sort();
}

/** gRPC-web trailers (flag 0x80) in a response body: "grpc-status: N". */
function grpcWebStatus(body: Uint8Array): string | undefined {
  let at = 0;
  let status: string | undefined;
  while (at + 5 <= body.byteLength) {
    const len = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
    if (body[at]! & 0x80) {
      const text = new TextDecoder().decode(body.subarray(at + 5, at + 5 + len));
      status = /grpc-status:\s*(\d+)/i.exec(text)?.[1];
    }
    at += 5 + len;
  }
  return status;
}

/** Codes that mean the server failed, not the client: INTERNAL, UNKNOWN, DATA_LOSS. */
const SERVER_FAULT_CODES = new Set(["13", "2", "15"]);
const SERVER_FAULT_NAMES = /"code"\s*:\s*"(internal|unknown|data_loss)"/;

async function faultOf(res: Response): Promise<string | undefined> {
  const body = new Uint8Array(await res.arrayBuffer());
  // UNIMPLEMENTED (501) is a true answer (SplitBlob, an unknown grpc-encoding), not a fault.
  if (res.status >= 500 && res.status !== 501) return new TextDecoder().decode(body.subarray(0, 300));
  const headerStatus = res.headers.get("grpc-status");
  if (headerStatus && SERVER_FAULT_CODES.has(headerStatus)) return `grpc-status ${headerStatus} ${res.headers.get("grpc-message")}`;
  const type = res.headers.get("content-type") ?? "";
  if (type.startsWith("application/grpc-web")) {
    const s = grpcWebStatus(body);
    if (s && SERVER_FAULT_CODES.has(s)) return `grpc-status ${s}: ${new TextDecoder().decode(body.subarray(-300))}`;
  }
  if (type.startsWith("application/connect+") || type.startsWith("application/json")) {
    const text = new TextDecoder().decode(body.subarray(-2000));
    if (SERVER_FAULT_NAMES.test(text)) return text.slice(-300);
  }
  return undefined;
}

/**
 * Sends `count` generated cases and returns every server fault (5xx, or INTERNAL / UNKNOWN /
 * DATA_LOSS in a 200 gRPC-web or Connect stream). Also returns what was stored meanwhile (R2 keys, CAS index rows).
 */
export async function runFuzz(seed: number, count: number, gen: (r: Rng, i: number) => Case): Promise<{ faults: Fault[]; stored: string[] }> {
  const before = new Set(await allObjectKeys());
  const faults: Fault[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      // One generator per case: a failure is reproduced from (seed, index) alone.
      const c = gen(rng(seed * 1_000_003 + i), i);
      try {
        const fault = await faultOf(await (i % VIA_HTTP === 0 ? SELF.fetch(c.request) : direct(c.request)));
        if (fault) faults.push({ index: i, label: c.label, detail: fault });
      } catch (e) {
        faults.push({ index: i, label: c.label, detail: `connection failed: ${String(e)}` });
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const stored = (await allObjectKeys()).filter((k) => !before.has(k));
  return { faults: faults.sort((a, b) => a.index - b.index), stored };
}

/** A readable failure message: the first faults, each with the index that reproduces it. */
export const describeFaults = (faults: Fault[]) =>
  faults
    .slice(0, 8)
    .map((f) => `#${f.index} ${f.label}: ${f.detail}`)
    .join("\n");

export const CONTENT_TYPES = ["application/proto", "application/json", "text/plain", "application/grpc-web", "application/connect+proto", "", "application/x-protobuf"];
