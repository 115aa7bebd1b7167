// The bridge in front of a worker reached over https (a deployed Kiln, from a CI host without a
// gRPC-enabled zone): calls relayed as bytes and both ByteStream.Read paths go over TLS. The
// stand-in worker serves the test-only certificate in ./testdata, trusted in this process only.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import tls from "node:tls";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReadRequestSchema, ReadResponseSchema } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { bridgeInFront, type BridgeFixture } from "./bridge-fixture.ts";
import { frameHeader } from "./grpc-web-frames.ts";

const cert = readFileSync(new URL("./testdata/tls-127.0.0.1.crt", import.meta.url), "utf8");
const key = readFileSync(new URL("./testdata/tls-127.0.0.1.key", import.meta.url), "utf8");

const frame = (payload: Uint8Array, flag = 0) => {
  const head = frameHeader(payload.byteLength);
  head[0] = flag;
  return Buffer.concat([head, payload]);
};
const blob = Buffer.alloc(2 * 1024 * 1024 + 5, 3);
const hash = createHash("sha256").update(blob).digest("hex");

const worker = https.createServer({ cert, key }, (req, res) => {
  req.resume();
  req.on("end", () => {
    if (req.method === "GET") {
      // The blob route: the bridge's ByteStream.Read asks for a blob, or a range of it.
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
      const part = m ? blob.subarray(Number(m[1]), m[2] ? Number(m[2]) + 1 : undefined) : blob;
      res.writeHead(m ? 206 : 200, { "content-length": String(part.byteLength) }).end(part);
      return;
    }
    res.writeHead(200, { "content-type": "application/grpc-web+proto" });
    res.end(Buffer.concat([frame(Buffer.from("pong")), frame(trailerSerialize(new Headers({ "grpc-status": "0" })), 0x80)]));
  });
});
let client: grpc.Client;
let fixture: BridgeFixture | undefined;

beforeAll(async () => {
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), cert]);
  fixture = await bridgeInFront(worker, "https", { chunkAboveBytes: 0 });
  client = fixture.client;
});
afterAll(() => fixture?.close());

const raw = (b: Buffer) => b;

function read(size: number, readLimit = 0n): Promise<Buffer> {
  const call = client.makeServerStreamRequest(
    "/google.bytestream.ByteStream/Read",
    raw,
    raw,
    Buffer.from(toBinary(ReadRequestSchema, create(ReadRequestSchema, { resourceName: `main/blobs/${hash}/${size}`, readLimit }))),
    new grpc.Metadata(),
  );
  const parts: Buffer[] = [];
  call.on("data", (m: Buffer) => parts.push(Buffer.from(fromBinary(ReadResponseSchema, m).data)));
  return new Promise((resolve, reject) => {
    call.on("error", reject);
    call.on("end", () => resolve(Buffer.concat(parts)));
  });
}

describe("the bridge in front of an https worker", () => {
  it("relays a unary call over TLS", async () => {
    const out = await new Promise<Buffer>((resolve, reject) =>
      client.makeUnaryRequest("/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", raw, raw, Buffer.alloc(0), (e, r) => (e ? reject(e) : resolve(r!))),
    );
    expect(out.toString()).toBe("pong");
  });

  it("reads a blob over TLS, whole and as a small range", async () => {
    expect((await read(blob.byteLength)).equals(blob)).toBe(true);
    expect((await read(blob.byteLength, 10n)).equals(blob.subarray(0, 10))).toBe(true);
  });
});

