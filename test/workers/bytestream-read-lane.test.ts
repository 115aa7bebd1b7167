// The gRPC-web lane for ByteStream.Read (src/surfaces/bytestream-read-lane.ts): which requests it
// takes, what it sends when its source fails part way, and, through the worker, responses
// identical byte for byte to the Connect router's for the same request.
import { SELF, env } from "cloudflare:test";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalServerRequest } from "@connectrpc/connect/protocol";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc-web";
import { afterEach, describe, expect, it } from "vitest";
import { ReadRequestSchema } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { READ_PATH, byteStreamReadLane, readFrames } from "../../src/surfaces/bytestream-read-lane.ts";
import { concat } from "./fuzz-gen.ts";
import { callWorker, collect, envelope, laneRequest, runLane, sameAsRouter, splitFrames } from "./grpc-web-lane-helpers.ts";
import { digestOf, pseudoRandom } from "./helpers.ts";

const MiB = 1024 * 1024;
const encode = (r: MessageInitShape<typeof ReadRequestSchema>) => toBinary(ReadRequestSchema, create(ReadRequestSchema, r));
const split = (bytes: Uint8Array) => {
  const out = splitFrames(bytes);
  expect(out.whole).toBe(true);
  return out;
};

/** Stores `data` with a sized HTTP cache PUT (one verified put, indexed). */
async function store(data: Uint8Array, instance = "lane") {
  const d = await digestOf(data);
  const res = await SELF.fetch(`http://kiln/cache/${instance}/cas/${d.hash}`, { method: "PUT", body: data, headers: { "content-length": String(data.byteLength) } });
  expect(res.status).toBe(200);
  return d;
}

describe("which requests take the lane", () => {
  const request = (body: Uint8Array, headers: Record<string, string> = {}) => laneRequest(READ_PATH, body, headers);
  const run = (req: UniversalServerRequest) => runLane(byteStreamReadLane, req, 64 * 1024);

  it("reads a plain request itself, in whole messages from the CAS", async () => {
    const data = pseudoRandom(MiB + 5, 31);
    const d = await store(data);
    const { res, handed } = await run(request(envelope(encode({ resourceName: `lane/blobs/${d.hash}/${d.sizeBytes}` }))));
    expect(handed).toBeUndefined();
    expect(res.status).toBe(200);
    const out = split(await collect(res.body as AsyncIterable<Uint8Array>));
    expect(out.status).toBe(0);
    // Two messages, 1 MiB and 5 bytes: frame header, tag 0x52, the length varint, the bytes.
    expect(out.messages.map((m) => m.byteLength)).toEqual([5 + 1 + 3 + MiB, 5 + 1 + 1 + 5]);
    expect(concat(...out.messages.map((m) => m.subarray(m.byteLength === 5 + 1 + 3 + MiB ? 9 : 7)))).toEqual(data);
  });

  it("hands a caller the request gate refuses to the router before reading a byte of its body", async () => {
    env.API_KEYS = JSON.stringify([{ key: "lane-key-0123456789-0123456789-0123", name: "lane" }]);
    try {
      let pulled = false;
      const req: UniversalServerRequest = {
        ...request(envelope(encode({ resourceName: `lane/blobs/${"a".repeat(64)}/1` }))),
        body: (async function* () {
          pulled = true;
          yield new Uint8Array(8);
        })(),
      };
      let handedUnread: boolean | undefined;
      const res = await byteStreamReadLane(async (r) => {
        handedUnread = r === req && !pulled;
        return { status: 299 };
      }, 64 * 1024)(req);
      expect(res.status).toBe(299);
      expect(handedUnread).toBe(true);
    } finally {
      delete (env as { API_KEYS?: string }).API_KEYS;
    }
  });

  it("reads a body without a Content-Length up to the router's limit, and hands a longer one over whole", async () => {
    const d = await store(pseudoRandom(10, 35));
    const unsized = (body: Uint8Array) => {
      const r = request(body);
      r.header.delete("content-length");
      return r;
    };
    const plain = await run(unsized(envelope(encode({ resourceName: `lane/blobs/${d.hash}/${d.sizeBytes}` }))));
    expect(plain.handed).toBeUndefined();
    expect(split(await collect(plain.res.body as AsyncIterable<Uint8Array>)).status).toBe(0);
    // A ReadRequest past 64 KiB (the limit the lane was given) in three chunks: the lane stops
    // reading at the second, and the router gets both, then the third, which nobody had read.
    const long = envelope(encode({ resourceName: "x".repeat(70_000) }));
    const req = unsized(long);
    let pulled = 0;
    req.body = (async function* () {
      for (const [from, to] of [[0, 40_000], [40_000, 68_000], [68_000, long.byteLength]]) {
        pulled++;
        yield long.subarray(from, to);
      }
    })();
    const over = await run(req);
    expect(pulled).toBe(3);
    expect(over.res.status).toBe(299);
    expect(over.handed).toEqual(long);
  });

  it("hands a request it cannot read to the router, with every byte it read", async () => {
    const plain = envelope(encode({ resourceName: "lane/blobs/x/1" }));
    const cases: [string, UniversalServerRequest, Uint8Array | undefined][] = [
      ["compressed", request(plain, { "grpc-encoding": "gzip" }), undefined],
      ["a compressed envelope", request(envelope(encode({}), 1)), envelope(encode({}), 1)],
      ["not a ReadRequest", request(envelope(new Uint8Array([0x0a, 0x05, 1]))), envelope(new Uint8Array([0x0a, 0x05, 1]))],
      ["two envelopes", request(concat(plain, plain)), concat(plain, plain)],
    ];
    for (const [what, req, bytes] of cases) {
      const { res, handed } = await run(req);
      expect(res.status, what).toBe(299);
      if (bytes) expect(handed, what).toEqual(bytes);
    }
  });
});

describe("readFrames", () => {
  const fail = (e: unknown) => setTrailerStatus(new Headers(), e as ConnectError);

  it("writes each header into the room in front of its piece, or copies a piece without room", async () => {
    const withRoom = new Uint8Array(9 + 300).fill(7).subarray(9);
    const without = new Uint8Array(300).fill(8);
    for (const [piece, room] of [[withRoom, 9], [without, 0]] as const) {
      const frames: Uint8Array[] = [];
      for await (const f of readFrames({ pieces: (async function* () { yield piece; })(), room }, new AbortController().signal, fail)) frames.push(f);
      // One buffer per message (a header sent alone would wait on Nagle's algorithm), then the trailer.
      expect(frames.map((f) => f.byteLength)).toEqual([5 + 1 + 2 + 300, 5 + 16]);
      expect(frames[0]!.buffer === piece.buffer).toBe(room > 0);
      expect(frames[0]!.subarray(8)).toEqual(piece);
    }
  });

  it("ends after the last whole message with the error in the trailer, when its source fails part way", async () => {
    async function* pieces() {
      yield new Uint8Array(1000).fill(1);
      throw new ConnectError("R2 went away", Code.Unavailable);
    }
    const out = split(await collect(readFrames({ pieces: pieces(), room: 0 }, new AbortController().signal, fail)));
    expect(out.messages.map((m) => m.byteLength)).toEqual([5 + 1 + 2 + 1000]);
    expect([out.status, out.message]).toEqual([Code.Unavailable, "R2 went away"]);
  });

  it("stops at the call's deadline", async () => {
    const deadline = new AbortController();
    let read = 0;
    async function* pieces() {
      for (;;) {
        read++;
        yield new Uint8Array(10);
        if (read === 2) deadline.abort(new ConnectError("the deadline passed", Code.DeadlineExceeded));
      }
    }
    const out = split(await collect(readFrames({ pieces: pieces(), room: 0 }, deadline.signal, fail)));
    expect(out.messages).toHaveLength(2);
    expect(out.status).toBe(Code.DeadlineExceeded);
  });
});

describe("through the worker, with and without a Content-Length: the same bytes as the Connect router alone", () => {
  afterEach(() => void delete (env as { API_KEYS?: string }).API_KEYS);

  const same = (m: MessageInitShape<typeof ReadRequestSchema>, what: string, headers: Record<string, string> = {}) => sameAsRouter(READ_PATH, encode(m), what, headers);

  it("for whole blobs, ranges, empty reads and compressed reads", async () => {
    const big = pseudoRandom(2 * MiB + 12_345, 32);
    const d = await store(big);
    const small = await store(new TextEncoder().encode("a small blob for the read lane"));
    const text = new TextEncoder().encode("zstd ".repeat(100_000));
    const z = await store(text);
    const name = (x: { hash: string; sizeBytes: bigint }) => `lane/blobs/${x.hash}/${x.sizeBytes}`;
    const reads: MessageInitShape<typeof ReadRequestSchema>[] = [
      { resourceName: name(d) },
      { resourceName: name(d), readOffset: 1000n, readLimit: BigInt(MiB + 7) },
      { resourceName: name(d), readOffset: BigInt(big.byteLength) },
      { resourceName: name(d), readOffset: 5n, readLimit: 10n * BigInt(MiB) },
      { resourceName: name(small) },
      { resourceName: `lane/blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0` },
      { resourceName: `lane/compressed-blobs/zstd/${z.hash}/${z.sizeBytes}` },
    ];
    for (const [i, r] of reads.entries()) {
      expect((await same(r, `read ${i}`)).status, `read ${i}`).toBe(0);
    }
    expect((await callWorker(READ_PATH, encode(reads[0]!), "sized")).messages).toHaveLength(3);
  });

  it("for refused reads: absent, out of range, negative, malformed, no key", async () => {
    const d = await store(pseudoRandom(100, 33));
    const absent = await digestOf(pseudoRandom(100, 34));
    const cases: [MessageInitShape<typeof ReadRequestSchema>, Code][] = [
      [{ resourceName: `lane/blobs/${absent.hash}/100` }, Code.NotFound],
      [{ resourceName: `lane/blobs/${d.hash}/100`, readOffset: 101n }, Code.OutOfRange],
      [{ resourceName: `lane/blobs/${d.hash}/100`, readOffset: -1n }, Code.OutOfRange],
      [{ resourceName: `lane/blobs/${d.hash}/100`, readLimit: -1n }, Code.InvalidArgument],
      [{ resourceName: `lane/blobs/${d.hash.toUpperCase()}/100` }, Code.InvalidArgument],
      [{ resourceName: `lane/compressed-blobs/zstd/${d.hash}/100`, readLimit: 5n }, Code.InvalidArgument],
      [{ resourceName: "" }, Code.InvalidArgument],
    ];
    for (const [r, code] of cases) {
      expect((await same(r, r.resourceName!)).status, r.resourceName).toBe(code);
    }
    (env as { API_KEYS?: string }).API_KEYS = JSON.stringify([{ key: "read-lane-key-0123456789-0123456789", name: "k" }]);
    const r = { resourceName: `lane/blobs/${d.hash}/100` };
    expect((await same(r, "no key")).status).toBe(Code.Unauthenticated);
    expect((await same(r, "the key", { authorization: "Bearer read-lane-key-0123456789-0123456789" })).status).toBe(0);
  });
});
