// Fuzz: malformed gRPC-web requests, as the bridge (or Cloudflare's edge) forwards native gRPC:
// frames that lie about their length, truncated frames, flags nobody sends, broken messages,
// client streams (ByteStream.Write) with many frames.
import { describe, expect, it } from "vitest";
import { ByteStream, WriteRequestSchema } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  FUZZ_CASES,
  FUZZ_TIMEOUT_MS,
  WRITING_METHODS,
  breakMessage,
  concat,
  describeFaults,
  encode,
  fuzzHash,
  fuzzSize,
  mutate,
  randomMessage,
  runFuzz,
  unaryMethods,
  type Case,
  type Rng,
} from "./fuzz-helpers.ts";

const SEED = 4242;

function frame(r: Rng, body: Uint8Array): Uint8Array {
  const flags = r.chance(0.85) ? 0 : r.pick([1, 0x80, 0x7f, 0xff]);
  const declared = r.chance(0.8) ? body.byteLength : r.pick([0, body.byteLength + 1 + r.int(64), 0x7fffffff, 0xffffffff]);
  const out = new Uint8Array(5 + body.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, declared);
  out.set(body, 5);
  return r.chance(0.08) ? out.subarray(0, r.int(out.byteLength)) : out;
}

/** A ByteStream.Write stream: resource names that are wrong, offsets that jump, data that does not hash. */
function writeFrames(r: Rng): Uint8Array {
  const resource = `${r.pick(["", "fuzz/", "%ZZ/", "a/b/"])}uploads/${r.pick([crypto.randomUUID(), "", "x".repeat(200), "../x"])}/${r.pick(["blobs", "compressed-blobs/zstd"])}/${fuzzHash(r)}/${fuzzSize(r)}`;
  const frames: Uint8Array[] = [];
  let offset = 0n;
  for (let i = 0, n = 1 + r.int(4); i < n; i++) {
    const data = r.bytes(r.int(100));
    const msg = create(WriteRequestSchema, {
      resourceName: i === 0 || r.chance(0.2) ? resource : "",
      writeOffset: r.chance(0.9) ? offset : BigInt(r.int(1000)) - 10n,
      finishWrite: i === n - 1 ? r.chance(0.9) : r.chance(0.1),
      data,
    });
    offset += BigInt(data.byteLength);
    const bytes = toBinary(WriteRequestSchema, msg);
    frames.push(frame(r, r.chance(0.2) ? breakMessage(r, bytes) : bytes));
  }
  return concat(...frames);
}

function grpcWebCase(r: Rng): Case {
  const headers: Record<string, string> = {
    "content-type": r.chance(0.9) ? r.pick(["application/grpc-web+proto", "application/grpc-web"]) : r.pick(["application/grpc-web+json", "application/grpc-web-text", "application/grpc", "text/html"]),
    "x-grpc-web": "1",
  };
  if (r.chance(0.1)) headers["grpc-timeout"] = r.pick(["1n", "99999999999H", "x", "-5S"]);
  if (r.chance(0.05)) headers["grpc-encoding"] = r.pick(["gzip", "snappy", "identity"]);
  if (r.chance(0.25)) {
    return {
      label: "ByteStream.Write stream",
      request: new Request(`http://kiln/${ByteStream.typeName}/Write`, { method: "POST", headers, body: writeFrames(r) }),
    };
  }
  const m = r.pick(unaryMethods);
  const msg = encode(m.input, randomMessage(m.input, r), false);
  // A writing method gets only mutations that cannot leave a valid request, so nothing is stored.
  const body = WRITING_METHODS.has(m.name) ? breakMessage(r, msg) : mutate(r, msg);
  const frames = r.chance(0.1) ? concat(frame(r, body), frame(r, body)) : frame(r, body);
  return {
    label: `${m.name} ${headers["content-type"]} ${frames.byteLength} bytes`,
    request: new Request(`http://kiln/${m.parent.typeName}/${m.name}`, { method: "POST", headers, body: frames }),
  };
}

describe("fuzz: gRPC-web", () => {
  it(`answers ${FUZZ_CASES.grpcWeb} malformed requests without a server fault and stores nothing`, { timeout: FUZZ_TIMEOUT_MS }, async () => {
    const { faults, stored } = await runFuzz(SEED, FUZZ_CASES.grpcWeb, grpcWebCase);
    expect(faults.length, describeFaults(faults)).toBe(0);
    expect(stored).toEqual([]);
  });
});
