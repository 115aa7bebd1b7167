// Every HTTP surface answers an upload only after it has read the whole body: a client still
// sending when the answer comes (Bazel's HTTP cache client) sees a broken pipe and counts the
// upload as failed. Each body here is a stream that records whether it was read to its end
// before the response arrived.
import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { WriteRequestSchema } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { MAX_ACTION_RESULT_BYTES } from "../../src/storage/action-store.ts";
import { zstdCompress } from "../../src/storage/zstd/encoder.ts";
import { concat } from "./fuzz-gen.ts";
import { envelope, splitFrames } from "./grpc-web-lane-helpers.ts";
import { casHolds, pseudoRandom, sha256Hex } from "./helpers.ts";

interface TrackedBody {
  body: ReadableStream<Uint8Array>;
  /** Every byte was pulled by the server. */
  readonly finished: boolean;
  /** The server dropped the rest of the body. */
  readonly cancelled: boolean;
}

/** `data` as a stream of a known length (a Content-Length request), in 4 KiB pieces. */
function tracked(data: Uint8Array): TrackedBody {
  const state = { finished: false, cancelled: false };
  let sent = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(ctl) {
      const n = sent;
      if (n >= data.byteLength) {
        state.finished = true;
        ctl.close();
        return;
      }
      sent = Math.min(n + 4096, data.byteLength);
      ctl.enqueue(data.slice(n, sent));
    },
    cancel() {
      state.cancelled = true;
    },
  });
  const sized = new FixedLengthStream(data.byteLength);
  void source.pipeTo(sized.writable).catch(() => {});
  return {
    body: sized.readable,
    get finished() {
      return state.finished;
    },
    get cancelled() {
      return state.cancelled;
    },
  };
}

async function put(url: string, data: Uint8Array): Promise<{ res: Response; body: TrackedBody }> {
  const body = tracked(data);
  const res = await SELF.fetch(url, { method: "PUT", body: body.body, headers: { "content-length": String(data.byteLength) } });
  await res.arrayBuffer();
  return { res, body };
}

function expectReadToTheEnd(body: TrackedBody, what: string) {
  expect(body.cancelled, what).toBe(false);
  expect(body.finished, what).toBe(true);
}

describe("uploads are answered after their whole body", () => {
  const data = pseudoRandom(256 * 1024, 91);

  it("HTTP cache: a CAS PUT of a blob already stored", async () => {
    const hash = await sha256Hex(data);
    expect((await put(`http://kiln/cache/main/cas/${hash}`, data)).res.status).toBe(200);
    const again = await put(`http://kiln/cache/main/cas/${hash}`, data);
    expect(again.res.status).toBe(200);
    expectReadToTheEnd(again.body, "again");
  });

  it("blob HTTP: a PUT of a blob already stored, and one whose size disagrees", async () => {
    const hash = await sha256Hex(data);
    const url = (size: number) => `http://kiln/main/uploads/${crypto.randomUUID()}/blobs/${hash}/${size}`;
    expect((await put(url(data.byteLength), data)).res.status).toBe(200);
    const again = await put(url(data.byteLength), data);
    expect(again.res.status).toBe(200);
    expectReadToTheEnd(again.body, "again");
    // The blob exists, but these bytes are not it: refused, still after the whole body.
    const short = await put(url(data.byteLength), data.subarray(0, 1000));
    expect(short.res.status).toBe(400);
    expectReadToTheEnd(short.body, "short");
  });

  it("a body that does not hash to its digest is refused after it was read, and not stored", async () => {
    const wrong = await sha256Hex(pseudoRandom(1000, 92));
    const cache = await put(`http://kiln/cache/main/cas/${wrong}`, data);
    expect(cache.res.status).toBe(400);
    expectReadToTheEnd(cache.body, "cache");
    // More bytes than the resource name declares: the server stops using them at the limit.
    const blobs = await put(`http://kiln/main/uploads/${crypto.randomUUID()}/blobs/${wrong}/1000`, data);
    expect(blobs.res.status).toBe(400);
    expectReadToTheEnd(blobs.body, "blobs");
    expect(await casHolds(wrong)).toBe(false);
  });

  it("refusals before the body is looked at: a bad path, an oversized action result, REST", async () => {
    const badPath = await put(`http://kiln/cache/main/cas/not-a-hash`, data);
    expect(badPath.res.status).toBe(400);
    expectReadToTheEnd(badPath.body, "badPath");

    const bigAc = new Uint8Array(MAX_ACTION_RESULT_BYTES + 1);
    const ac = await put(`http://kiln/cache/main/ac/${await sha256Hex("k")}`, bigAc);
    expect(ac.res.status).toBe(400);
    expectReadToTheEnd(ac.body, "ac");

    // Over REST's JSON body limit (8 MiB), refused from its Content-Length.
    const json = new Uint8Array(9 * 1024 * 1024).fill(0x20);
    const rest = tracked(json);
    const res = await SELF.fetch("http://kiln/v2/main/blobs:findMissing", {
      method: "POST",
      body: rest.body,
      headers: { "content-length": String(json.byteLength), "content-type": "application/json" },
    });
    expect(res.status).toBe(400);
    expectReadToTheEnd(rest, "rest");
  });
});

describe("a gRPC-web ByteStream.Write is answered after its whole body", () => {
  // The bridge relays Writes it does not PUT (compressed, resumed) as gRPC-web over HTTP/1.1: an
  // answer while it still sends broke its connection, and it reported EPIPE as INTERNAL instead
  // of the worker's status.
  const data = pseudoRandom(512 * 1024, 93);

  /** A Write of `payload` in 16 KiB messages (offsets in `payload`'s bytes), as one gRPC-web body. */
  function writeBody(resourceName: string, payload: Uint8Array): Uint8Array {
    const frames: Uint8Array[] = [];
    for (let at = 0; at < payload.byteLength; at += 16 * 1024) {
      const end = Math.min(at + 16 * 1024, payload.byteLength);
      const m = create(WriteRequestSchema, {
        resourceName: at === 0 ? resourceName : "",
        writeOffset: BigInt(at),
        data: payload.subarray(at, end),
        finishWrite: end === payload.byteLength,
      });
      frames.push(envelope(toBinary(WriteRequestSchema, m)));
    }
    return concat(...frames);
  }

  async function write(resourceName: string, payload: Uint8Array) {
    const body = tracked(writeBody(resourceName, payload));
    const res = await SELF.fetch("http://kiln/google.bytestream.ByteStream/Write", {
      method: "POST",
      body: body.body,
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
    });
    const { status, message } = splitFrames(new Uint8Array(await res.arrayBuffer()));
    return { status, message, body };
  }

  it("a blob already stored: OK from its first message, after the rest was read", async () => {
    const hash = await sha256Hex(data);
    const name = () => `main/uploads/${crypto.randomUUID()}/blobs/${hash}/${data.byteLength}`;
    expect((await write(name(), data)).status).toBe(0);
    const again = await write(name(), data);
    expect(again.status).toBe(0);
    expectReadToTheEnd(again.body, "again");
  });

  it("a corrupt zstd stream: INVALID_ARGUMENT after the rest was read, nothing stored", async () => {
    const plain = new Uint8Array(2 * 1024 * 1024).fill(0x61);
    plain.set(data, 1000);
    const hash = await sha256Hex(plain);
    const zstd = new Uint8Array(await zstdCompress(plain));
    zstd.fill(0x41, 100, 400);
    // Padding after the corruption, so the worker finds it long before the body ends.
    const padded = concat(zstd, pseudoRandom(256 * 1024, 94));
    const w = await write(`main/uploads/${crypto.randomUUID()}/compressed-blobs/zstd/${hash}/${plain.byteLength}`, padded);
    expect(w.status, w.message).toBe(3);
    expectReadToTheEnd(w.body, "corrupt");
    expect(await casHolds(hash)).toBe(false);
  });

  it("a unary call refused before its message is read (no API key) still reads the body", async () => {
    env.API_KEYS = JSON.stringify([{ key: `k-${crypto.randomUUID()}`, tenant: "t", name: "ci" }]);
    try {
      const message = concat(envelope(new Uint8Array(3 * 1024 * 1024).fill(1)));
      const body = tracked(message);
      const res = await SELF.fetch("http://kiln/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs", {
        method: "POST",
        body: body.body,
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      });
      const { status } = splitFrames(new Uint8Array(await res.arrayBuffer()));
      expect(status).toBe(16);
      expectReadToTheEnd(body, "unauthenticated");
    } finally {
      delete env.API_KEYS;
    }
  });

  it("a Write refused before it is read (bad resource name) still reads the body", async () => {
    const w = await write("main/uploads/x/blobs/not-a-hash/5", data);
    expect(w.status, w.message).toBe(3);
    expectReadToTheEnd(w.body, "refused");
  });
});
