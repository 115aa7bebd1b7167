// Fuzz: malformed Connect requests (binary and JSON, unary and server-streaming) to every method,
// and now and then a batch over the entry limits.
// A case is (seed, index); a failure names its index so it can be replayed alone.
import { create, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  BatchReadBlobsRequestSchema,
  BatchUpdateBlobsRequestSchema,
  ContentAddressableStorage,
  FindMissingBlobsRequestSchema,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { MAX_BATCH_ENTRIES, MAX_FIND_MISSING_DIGESTS } from "../../src/services/limits.ts";
import {
  CONTENT_TYPES,
  FUZZ_CASES,
  FUZZ_TIMEOUT_MS,
  WRITING_METHODS,
  breakMessage,
  describeFaults,
  encode,
  missingHash,
  mutate,
  mutateJson,
  randomMessage,
  runFuzz,
  unaryMethods,
  type Case,
  type Rng,
} from "./fuzz-helpers.ts";

const SEED = 9001;

/** Batches over the entry limits (size-0 entries weigh nothing against the byte limit). */
function oversizedCase(r: Rng): Case {
  const cas = ContentAddressableStorage;
  const n = MAX_FIND_MISSING_DIGESTS + 1 + r.int(20_000);
  const digests = Array.from({ length: n }, () => ({ hash: missingHash(r), sizeBytes: 0n }));
  const [method, schema, msg] = r.pick([
    () => [cas.method.findMissingBlobs, FindMissingBlobsRequestSchema, { blobDigests: digests }] as const,
    () => [cas.method.batchReadBlobs, BatchReadBlobsRequestSchema, { digests: digests.slice(0, MAX_BATCH_ENTRIES + 1 + r.int(5000)) }] as const,
    () => [cas.method.batchUpdateBlobs, BatchUpdateBlobsRequestSchema, { requests: digests.slice(0, MAX_BATCH_ENTRIES + 1 + r.int(5000)).map((digest) => ({ digest })) }] as const,
  ])();
  const body = toBinary(schema as DescMessage, create(schema as DescMessage, msg as never));
  return {
    label: `oversized ${method.name}`,
    request: new Request(`http://kiln/${cas.typeName}/${method.name}`, { method: "POST", headers: { "content-type": "application/proto" }, body }),
  };
}

function connectCase(r: Rng): Case {
  if (r.chance(0.003)) return oversizedCase(r);
  const m = r.pick(unaryMethods);
  const stream = m.methodKind === "server_streaming";
  const writing = WRITING_METHODS.has(m.name);
  const json = !writing && r.chance(0.4);
  const msg = encode(m.input, randomMessage(m.input, r), json);
  // A writing method gets only mutations that cannot leave a valid request, so nothing is stored.
  let body = json ? mutateJson(r, msg) : writing ? breakMessage(r, msg) : mutate(r, msg);
  const codec = json ? "json" : "proto";
  let type = stream ? `application/connect+${codec}` : `application/${codec}`;
  if (r.chance(0.1)) type = r.pick(CONTENT_TYPES);
  if (stream) {
    // Enveloped: flags, 4-byte length, message. Lengths that lie, and flags nobody should send.
    const flags = r.chance(0.85) ? 0 : r.pick([1, 2, 0x80, 0xff]);
    const declared = r.chance(0.8) ? body.byteLength : r.pick([0, body.byteLength + 1 + r.int(100), 0xffffffff]);
    const env = new Uint8Array(5 + body.byteLength);
    env[0] = flags;
    new DataView(env.buffer).setUint32(1, declared);
    env.set(body, 5);
    body = r.chance(0.1) ? env.subarray(0, r.int(5)) : env;
  }
  const headers: Record<string, string> = { "content-type": type };
  if (r.chance(0.5)) headers["connect-protocol-version"] = r.pick(["1", "2", ""]);
  if (r.chance(0.1)) headers["connect-timeout-ms"] = r.pick(["-1", "abc", "99999999999999"]);
  if (r.chance(0.05)) headers["content-encoding"] = r.pick(["gzip", "br", "zstd"]);
  const url = `http://kiln/${m.parent.typeName}/${m.name}`;
  if (!writing && r.chance(0.1)) {
    const q = `?encoding=${r.pick(["proto", "json", "xml"])}&base64=${r.pick(["1", "0"])}&message=${r.pick(["%ZZ", "!!!", btoa(String.fromCharCode(...body.subarray(0, 50))), ""])}&connect=v1`;
    return { label: `GET ${m.name}${q.slice(0, 80)}`, request: new Request(url + q) };
  }
  return { label: `POST ${m.name} ${type} ${body.byteLength} bytes`, request: new Request(url, { method: "POST", headers, body }) };
}

describe("fuzz: Connect (binary and JSON)", () => {
  it(`answers ${FUZZ_CASES.connect} malformed requests without a server fault and stores nothing`, { timeout: FUZZ_TIMEOUT_MS }, async () => {
    const { faults, stored } = await runFuzz(SEED, FUZZ_CASES.connect, connectCase);
    expect(faults.length, describeFaults(faults)).toBe(0);
    expect(stored).toEqual([]);
  });
});
