// The bridge's raw HTTP/2 path for small Writes (bytestream-write-raw.ts), from a grpc-js client:
// which Writes it answers itself (into the batcher, checked as through connect-node), and that
// every other Write reaches connect-node byte for byte, the bytes it already read put back.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ByteStream } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { codeOf, connect, errorOf, grpc, sha256, type Clients } from "../test/e2e/grpc-client.ts";
import { rawSmallWrite } from "./bytestream-write-raw.ts";
import type { SmallWrites } from "./bytestream-write.ts";
import { SmallWriteBatcher, type SmallBlob } from "./small-write-batcher.ts";

/** What the batcher was given, and what connect-node (the hand-over) read. */
const batched: SmallBlob[] = [];
const handedOver: { resource: string; offsets: string[]; bytes: Buffer }[] = [];

// connect-node's side, standing in for the bridge's: reads the Write and says what it got.
const connectNode = connectNodeAdapter({
  routes(router) {
    router.rpc(ByteStream.method.write, async (requests) => {
      const got = { resource: "", offsets: [] as string[], bytes: Buffer.alloc(0) };
      for await (const r of requests) {
        got.resource ||= r.resourceName;
        got.offsets.push(String(r.writeOffset));
        got.bytes = Buffer.concat([got.bytes, r.data]);
      }
      handedOver.push(got);
      return { committedSize: BigInt(got.bytes.byteLength) };
    });
  },
});

// The worker, for what is relayed as it came (a body without one whole message).
let relayed = 0;
const worker = createServer(
  connectNodeAdapter({
    routes(router) {
      router.rpc(ByteStream.method.write, async (requests) => {
        relayed++;
        for await (const _ of requests);
        throw new ConnectError("the worker saw no WriteRequest", Code.InvalidArgument);
      });
    },
  }),
);

let server: http2.Http2Server;
let c: Clients;

beforeAll(async () => {
  await new Promise<void>((resolve) => worker.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(worker.address() as AddressInfo).port}`;
  const batcher = new SmallWriteBatcher(async (_lane, blobs) => {
    batched.push(...blobs);
    return blobs.map(() => undefined);
  }) as unknown as SmallWrites;
  const handler = rawSmallWrite(batcher, createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" }), { base, agent: new http.Agent({ keepAlive: true }) }, (req, res) => void connectNode(req, res));
  server = http2.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  c = connect(`127.0.0.1:${(server.address() as AddressInfo).port}`);
});
afterAll(() => {
  c?.close();
  server?.close();
  worker.close();
});

/** One Write of `parts` (offsets as sent, finish_write on the last), answered or refused. */
function write(resource: string, parts: Buffer[], offsets = parts.map((_, i) => parts.slice(0, i).reduce((n, p) => n + p.byteLength, 0))) {
  return new Promise<{ committed_size: string }>((resolve, reject) => {
    const call = c.bytestream.write(new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (err: grpc.ServiceError | null, res: { committed_size: string }) =>
      err ? reject(err) : resolve(res),
    );
    parts.forEach((data, i) => call.write({ resource_name: i === 0 ? resource : "", write_offset: String(offsets[i]), data, finish_write: i === parts.length - 1 }));
    call.end();
  });
}
const upload = (blob: Buffer) => `uploads/${randomUUID()}/blobs/${sha256(blob)}/${blob.byteLength}`;

describe("the bridge's raw path for small Writes", () => {
  it("answers a small blob itself, in one message or several, and sends it to the batcher whole", async () => {
    const one = randomBytes(1024);
    const three = randomBytes(900);
    batched.length = handedOver.length = 0;
    expect((await write(upload(one), [one])).committed_size).toBe("1024");
    expect((await write(upload(three), [three.subarray(0, 300), three.subarray(300, 600), three.subarray(600)])).committed_size).toBe("900");
    expect(handedOver).toEqual([]);
    expect(batched.map((b) => [b.hash, Buffer.from(b.data).equals(b.hash === sha256(one) ? one : three)])).toEqual([
      [sha256(one), true],
      [sha256(three), true],
    ]);
  });

  it("checks a small blob's messages as connect-node's path does", async () => {
    batched.length = 0;
    const blob = randomBytes(600);
    const gap = await errorOf(write(upload(blob), [blob.subarray(0, 300), blob.subarray(300)], [0, 301]));
    expect(gap.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(gap.details).toMatch(/write_offset 301 where 300 was expected/);
    const long = Buffer.concat([blob, Buffer.from("x")]);
    expect(await codeOf(write(upload(blob), [long]))).toBe("INVALID_ARGUMENT");
    expect(batched).toEqual([]);
  });

  it("hands every other Write to connect-node with the bytes it read put back, byte for byte", async () => {
    handedOver.length = 0;
    const big = randomBytes(300 * 1024); // over the small-blob size, in five messages
    const parts = [0, 1, 2, 3, 4].map((i) => big.subarray(i * 60 * 1024, (i + 1) * 60 * 1024));
    expect((await write(upload(big), parts)).committed_size).toBe(String(big.byteLength));
    const resumed = randomBytes(2048); // a small blob, but not from offset 0
    expect((await write(upload(resumed), [resumed.subarray(1024)], [1024])).committed_size).toBe("1024");
    const oddName = randomBytes(100);
    expect((await write(`not/a/write/name`, [oddName])).committed_size).toBe("100");
    expect(handedOver.map((h) => [h.resource.split("/").slice(-1)[0], h.offsets, createHash("sha256").update(h.bytes).digest("hex")])).toEqual([
      [String(big.byteLength), ["0", "61440", "122880", "184320", "245760"], sha256(big)],
      ["2048", ["1024"], sha256(resumed.subarray(1024))],
      ["name", ["0"], sha256(oddName)],
    ]);
  });

  it("relays a body without one whole message to the worker, which answers it", async () => {
    relayed = 0;
    const err = await errorOf(
      new Promise((resolve, reject) => {
        const call = c.bytestream.write(new grpc.Metadata(), (e: grpc.ServiceError | null, r: unknown) => (e ? reject(e) : resolve(r)));
        call.end(); // no message at all
      }),
    );
    expect([err.code, err.details, relayed]).toEqual([grpc.status.INVALID_ARGUMENT, "the worker saw no WriteRequest", 1]);
  });
});
