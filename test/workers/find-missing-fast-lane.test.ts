// The gRPC-web fast lane for FindMissingBlobs (src/surfaces/find-missing-fast-lane.ts): its wire
// reader and writer against protobuf-es, which requests it takes and which it hands to the Connect
// router, and, through the worker, answers identical to the router's for the same request.
import { env } from "cloudflare:test";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { UniversalServerRequest } from "@connectrpc/connect/protocol";
import { afterEach, describe, expect, it } from "vitest";
import {
  DigestFunction_Value,
  FindMissingBlobsRequestSchema,
  FindMissingBlobsResponseSchema,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { parseDigests } from "../../src/shared/digest.ts";
import { FIND_MISSING_PATH, findMissingFastLane } from "../../src/surfaces/find-missing-fast-lane.ts";
import { readFindMissing, writeFindMissingResponse } from "../../src/surfaces/find-missing-wire.ts";
import { EMPTY_SHA256 } from "../../src/storage/digest.ts";
import { collect, envelope, laneRequest, runLane, sameAsRouter } from "./grpc-web-lane-helpers.ts";
import { sha256Hex, upload } from "./helpers.ts";

const encode = (r: MessageInitShape<typeof FindMissingBlobsRequestSchema>) => toBinary(FindMissingBlobsRequestSchema, create(FindMissingBlobsRequestSchema, r));
const hashOf = (i: number) => sha256Hex(`fast-lane ${i} ${crypto.randomUUID()}`);
const concat = (...parts: (Uint8Array | number[])[]) => new Uint8Array(parts.flatMap((p) => [...p]));
/** A field record: tag (field, wire type) then the given bytes. */
const field = (n: number, wt: number, ...rest: (Uint8Array | number[])[]) => concat([(n << 3) | wt], ...rest);
/** A length-delimited payload: its length as a varint, then the bytes. */
const len = (b: Uint8Array) => {
  const v: number[] = [];
  for (let n = b.byteLength; ; n >>= 7) {
    if (n < 128) {
      v.push(n);
      break;
    }
    v.push((n & 0x7f) | 0x80);
  }
  return concat(v, b);
};
const ascii = (s: string) => new TextEncoder().encode(s);

describe("readFindMissing", () => {
  it("reads what protobuf-es writes: the same digests as the generic codec, and where each one lies", async () => {
    const digests = [
      { hash: await hashOf(1), sizeBytes: 0n },
      { hash: await hashOf(2), sizeBytes: 1n },
      { hash: await hashOf(3), sizeBytes: 2n ** 53n - 1n },
      { hash: await hashOf(4), sizeBytes: 300n },
    ];
    const bytes = encode({ instanceName: "team/ü", blobDigests: digests, digestFunction: DigestFunction_Value.SHA256 });
    const wire = readFindMissing(bytes)!;
    expect(wire.instanceName).toBe("team/ü");
    expect(wire.digestFunction).toBe(DigestFunction_Value.SHA256);
    expect(wire.digests).toEqual(parseDigests(fromBinary(FindMissingBlobsRequestSchema, bytes).blobDigests, "blob_digests"));
    // Each span is exactly one Digest message.
    for (const [i, d] of digests.entries()) {
      const span = bytes.subarray(wire.spans[2 * i]!, wire.spans[2 * i]! + wire.spans[2 * i + 1]!);
      expect(toBinary(FindMissingBlobsRequestSchema, create(FindMissingBlobsRequestSchema, { blobDigests: [d] })).subarray(2)).toEqual(span);
    }
  });

  it("skips fields it does not know, at both levels; a field given twice counts once, the last", async () => {
    const [h1, h2] = [await hashOf(5), await hashOf(6)];
    const digest = concat(
      field(9, 0, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // a negative int64 we do not know
      field(1, 2, len(ascii(h1))),
      field(3, 5, [1, 2, 3, 4]),
      field(4, 1, [1, 2, 3, 4, 5, 6, 7, 8]),
      field(2, 0, [5]),
      field(1, 2, len(ascii(h2))),
      field(2, 0, [7]),
    );
    const bytes = concat(field(7, 2, len(ascii("unknown"))), field(1, 2, len(ascii("a"))), field(2, 2, len(digest)), field(1, 2, len(ascii("b"))));
    const wire = readFindMissing(bytes)!;
    expect(wire.instanceName).toBe("b");
    expect(wire.digests).toEqual([{ hash: h2, size: 7 }]);
    expect(fromBinary(FindMissingBlobsRequestSchema, bytes).blobDigests.map((d) => [d.hash, d.sizeBytes])).toEqual([[h2, 7n]]);
  });

  it("gives up (for the generic codec to judge) on anything it does not fully understand", async () => {
    const h = await hashOf(7);
    const digestWith = (...fields: Uint8Array[]) => field(2, 2, len(concat(...fields)));
    const cases: [string, Uint8Array][] = [
      ["upper-case hex", digestWith(field(1, 2, len(ascii(h.toUpperCase()))), field(2, 0, [1]))],
      ["a 63-digit hash", digestWith(field(1, 2, len(ascii(h.slice(1)))), field(2, 0, [1]))],
      ["no hash", digestWith(field(2, 0, [1]))],
      ["a size past 2^53", encode({ blobDigests: [{ hash: h, sizeBytes: 2n ** 53n + 1n }] })],
      ["a negative size", encode({ blobDigests: [{ hash: h, sizeBytes: -1n }] })],
      ["a hash sent as a varint", digestWith(field(1, 0, [1]))],
      ["digests sent as a varint", field(2, 0, [1])],
      ["a group", concat(field(5, 3, []), field(5, 4, []))],
      ["a truncated digest", encode({ blobDigests: [{ hash: h, sizeBytes: 1n }] }).subarray(0, 40)],
      ["an instance name that is not UTF-8", field(1, 2, len(new Uint8Array([0xc3, 0x28])))],
      ["a digest function past int32", concat(field(3, 0, [0x80, 0x80, 0x80, 0x80, 0x08]))],
    ];
    for (const [what, bytes] of cases) expect(readFindMissing(bytes), what).toBeUndefined();
  });
});

describe("writeFindMissingResponse", () => {
  it("answers with the asked-for digests as the client sent them, after the headroom", async () => {
    const long = concat(field(1, 2, len(ascii(await hashOf(8)))), field(2, 0, [0x80, 0x01]), field(15, 2, len(new Uint8Array(100)))); // over 127 bytes
    const plain = { hash: await hashOf(9), sizeBytes: 42n };
    expect(long.byteLength).toBeGreaterThan(127);
    const bytes = concat(field(2, 2, len(long)), encode({ blobDigests: [plain, plain] }));
    const wire = readFindMissing(bytes)!;
    expect(wire.digests.map((d) => d.size)).toEqual([128, 42, 42]);
    const out = writeFindMissingResponse(bytes, wire, [0, 2], 5);
    expect([...out.subarray(0, 5)]).toEqual([0, 0, 0, 0, 0]);
    const res = fromBinary(FindMissingBlobsResponseSchema, out.subarray(5));
    const asked = fromBinary(FindMissingBlobsRequestSchema, bytes).blobDigests;
    expect(res.missingBlobDigests).toEqual([asked[0], asked[2]]);
    expect(writeFindMissingResponse(bytes, wire, [])).toEqual(new Uint8Array(0));
  });
});

describe("which requests take the lane", () => {
  const request = (body: Uint8Array, headers: Record<string, string> = {}) => laneRequest(FIND_MISSING_PATH, body, headers);
  const run = (req: UniversalServerRequest) => runLane(findMissingFastLane, req);

  it("answers a plain request itself, from the CAS", async () => {
    const present = await upload(`fast lane present ${crypto.randomUUID()}`);
    const absent = { hash: await hashOf(10), sizeBytes: 3n };
    const { res, handed } = await run(request(envelope(encode({ blobDigests: [present, absent, { hash: EMPTY_SHA256, sizeBytes: 0n }] }))));
    expect(handed).toBeUndefined();
    expect(res.status).toBe(200);
    const frames = await collect(res.body as AsyncIterable<Uint8Array>);
    const n = new DataView(frames.buffer).getUint32(1);
    expect(fromBinary(FindMissingBlobsResponseSchema, frames.subarray(5, 5 + n)).missingBlobDigests.map((d) => d.hash)).toEqual([absent.hash]);
    expect(new TextDecoder().decode(frames.subarray(10 + n))).toBe("grpc-status: 0\r\n");
    expect(frames[5 + n]).toBe(0x80);
  });

  it("hands everything else to the router, with every byte it read", async () => {
    const plain = envelope(encode({ blobDigests: [{ hash: await hashOf(11), sizeBytes: 1n }] }));
    const cases: [string, UniversalServerRequest][] = [
      ["compressed", request(plain, { "grpc-encoding": "gzip" })],
      ["JSON", request(plain, { "content-type": "application/grpc-web+json" })],
      ["an empty Content-Length", request(plain, { "content-length": "" })],
      ["over the limit", request(plain, { "content-length": String(2 * 1024 * 1024) })],
      ["a bad grpc-timeout", request(plain, { "grpc-timeout": "soon" })],
      ["a compressed envelope", request(envelope(encode({}), 1))],
      ["two envelopes", request(concat(plain, plain), {})],
      ["a message it cannot read", request(envelope(encode({ blobDigests: [{ hash: "nothex", sizeBytes: 1n }] })))],
      ["shorter than announced", request(plain, { "content-length": String(plain.byteLength + 10) })],
      [
        "broken off",
        {
          ...request(plain),
          body: (async function* () {
            yield plain.subarray(0, 7);
            throw new Error("the client went away");
          })(),
        },
      ],
    ];
    for (const [what, req] of cases) {
      const { res, handed } = await run(req);
      expect(res.status, what).toBe(299);
      if (what === "two envelopes") expect(handed, what).toEqual(concat(plain, plain));
      else if (what === "broken off") expect(handed, what).toEqual(plain.subarray(0, 7));
      else if (what === "a message it cannot read" || what === "a compressed envelope" || what === "shorter than announced") expect(handed?.byteLength, what).toBeGreaterThan(0);
    }
  });
});

describe("through the worker, with and without a Content-Length: the same answers as the Connect router alone", () => {
  afterEach(() => void delete (env as { API_KEYS?: string }).API_KEYS);

  const same = (m: Uint8Array, what: string, headers: Record<string, string> = {}) => sameAsRouter(FIND_MISSING_PATH, m, what, headers);

  it("for present, absent, repeated and empty digests, unknown fields and odd instance names", async () => {
    const present = await upload(`fast lane worker ${crypto.randomUUID()}`);
    const absent = { hash: await hashOf(12), sizeBytes: 5n };
    const requests = [
      encode({ blobDigests: [present, absent, present, absent, { hash: absent.hash, sizeBytes: 6n }, { hash: EMPTY_SHA256, sizeBytes: 0n }] }),
      encode({}),
      encode({ instanceName: "", blobDigests: [{ ...present, sizeBytes: present.sizeBytes + 1n }], digestFunction: DigestFunction_Value.SHA256 }),
      concat(encode({ blobDigests: [absent] }), field(2, 2, len(concat(field(1, 2, len(ascii(absent.hash))), field(2, 0, [9]), field(12, 0, [1]))))),
    ];
    for (const [i, m] of requests.entries()) {
      expect((await same(m, `request ${i}`)).status, `request ${i}`).toBe(0);
    }
  });

  it("for refused requests: a digest function, a malformed digest, a missing key", async () => {
    const cases: [Uint8Array, Code][] = [
      [encode({ blobDigests: [{ hash: await hashOf(13), sizeBytes: 1n }], digestFunction: DigestFunction_Value.MD5 }), Code.InvalidArgument],
      [encode({ blobDigests: [{ hash: "A".repeat(64), sizeBytes: 1n }] }), Code.InvalidArgument],
      [encode({ instanceName: "bad//name" }), Code.InvalidArgument],
    ];
    for (const [m, code] of cases) {
      expect((await same(m, Code[code])).status).toBe(code);
    }
    (env as { API_KEYS?: string }).API_KEYS = JSON.stringify([{ key: "fast-lane-key-0123456789-0123456789", name: "k" }]);
    const m = encode({ blobDigests: [{ hash: await hashOf(14), sizeBytes: 1n }] });
    for (const headers of [{}, { authorization: "Bearer wrong-key-0123456789-0123456789-0123" }] as Record<string, string>[]) {
      expect((await same(m, "a missing or wrong key", headers)).status).toBe(Code.Unauthenticated);
    }
    expect((await same(m, "the right key", { authorization: "Bearer fast-lane-key-0123456789-0123456789" })).status).toBe(0);
  });
});
