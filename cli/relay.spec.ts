// The bridge's byte relay against a stand-in worker and a grpc-js client: request bytes reach the
// worker as sent, response frames cut anywhere arrive whole, and every way a worker's answer can
// end (trailers, trailers-only, an HTTP error, a body without trailers) becomes the right status.
import { createHash, randomUUID } from "node:crypto";
import { once } from "node:events";
import http2 from "node:http2";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  FindMissingBlobsRequestSchema,
  FindMissingBlobsResponseSchema,
  GetTreeRequestSchema,
  GetTreeResponseSchema,
} from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ReadRequestSchema, WriteRequestSchema } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.ts";
import type { Bridge } from "./bridge.ts";
import { bridgeInFront, type BridgeFixture } from "./bridge-fixture.ts";
import { MAX_SINGLE_REQUEST_BYTES } from "./relay.ts";
import { frameHeader } from "./grpc-web-frames.ts";

const CAS = "/build.bazel.remote.execution.v2.ContentAddressableStorage";
const BS = "/google.bytestream.ByteStream";
const frame = (payload: Uint8Array, flag = 0) => {
  const head = frameHeader(payload.byteLength);
  head[0] = flag;
  return Buffer.concat([head, payload]);
};
const trailerFrame = (fields: Record<string, string>) => frame(trailerSerialize(new Headers(fields)), 0x80);

interface Seen {
  url: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
  closed: Promise<unknown>;
}
let answer: (res: ServerResponse, seen: Seen) => Promise<void> | void = () => {};
const seen: Seen[] = [];
const worker = createServer((req, res) => {
  const parts: Buffer[] = [];
  const closed = once(res, "close");
  req.on("data", (c: Buffer) => parts.push(c));
  req.on("end", () => {
    const s = { url: req.url!, headers: req.headers, body: Buffer.concat(parts), closed };
    seen.push(s);
    void answer(res, s);
  });
});
let bridge: Bridge;
let client: grpc.Client;
let fixture: BridgeFixture | undefined;
const logged: string[] = [];

beforeAll(async () => {
  fixture = await bridgeInFront(worker, "http", { log: (l) => logged.push(l) });
  ({ bridge, client } = fixture);
});
afterAll(() => fixture?.close());

const raw = (b: Buffer) => b;
async function waitUntil(ok: () => boolean, what = "a condition") {
  for (let i = 0; !ok(); i++) {
    if (i > 500) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
function unary(path: string, request: Uint8Array, md = new grpc.Metadata()): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(path, raw, raw, Buffer.from(request), md, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r!))),
  );
}
function serverStream(path: string, request: Uint8Array): { call: grpc.ClientReadableStream<Buffer>; done: Promise<{ messages: Buffer[]; error?: grpc.ServiceError }> } {
  const call = client.makeServerStreamRequest(path, raw, raw, Buffer.from(request), new grpc.Metadata(), { deadline: Date.now() + 10_000 });
  const messages: Buffer[] = [];
  call.on("data", (m: Buffer) => messages.push(m));
  const done = new Promise<{ messages: Buffer[]; error?: grpc.ServiceError }>((resolve) => {
    call.on("error", (error: grpc.ServiceError) => resolve({ messages, error }));
    call.on("end", () => resolve({ messages }));
  });
  return { call, done };
}

/**
 * Writes `body` in pieces, each after a pause, so each reaches the bridge as its own chunk: byte by
 * byte within `fine` bytes of either end (frame headers and the trailer frame), `piece` bytes elsewhere.
 */
async function dribble(res: ServerResponse, body: Buffer, piece: number, fine = 24) {
  for (let at = 0; at < body.byteLength; ) {
    const n = at < fine || at >= body.byteLength - fine ? 1 : piece;
    res.write(body.subarray(at, at + n));
    at += n;
    await sleep(2);
  }
  res.end();
}

const findMissing = create(FindMissingBlobsRequestSchema, {
  instanceName: "main",
  blobDigests: Array.from({ length: 300 }, (_, i) => ({ hash: i.toString(16).padStart(64, "0"), sizeBytes: BigInt(i) })),
});

describe("the bridge relays protobuf calls as bytes", () => {
  it("sends the request's bytes as gRPC-web and returns a response whose frames arrived cut anywhere", async () => {
    const response = toBinary(FindMissingBlobsResponseSchema, create(FindMissingBlobsResponseSchema, { missingBlobDigests: findMissing.blobDigests.slice(0, 200) }));
    answer = (res) => {
      res.writeHead(200, { "content-type": "application/grpc-web+proto" });
      return dribble(res, Buffer.concat([frame(response), trailerFrame({ "grpc-status": "0" })]), 997);
    };
    const md = new grpc.Metadata();
    md.set("authorization", "Bearer k");
    md.set("x-trace", "t");
    const got = await unary(`${CAS}/FindMissingBlobs`, toBinary(FindMissingBlobsRequestSchema, findMissing), md);
    expect(fromBinary(FindMissingBlobsResponseSchema, got).missingBlobDigests).toHaveLength(200);
    const s = seen.at(-1)!;
    expect(s.url).toBe(`${CAS}/FindMissingBlobs`);
    expect(s.body.equals(frame(toBinary(FindMissingBlobsRequestSchema, findMissing)))).toBe(true);
    expect(s.headers).toMatchObject({ "content-type": "application/grpc-web+proto", "x-grpc-web": "1", authorization: "Bearer k", "x-trace": "t" });
    expect(s.headers["grpc-timeout"]).toMatch(/^\d+[mSM]$/);
    expect(s.headers.te).toBeUndefined();
    // One message: read whole, sent upstream in one piece with its length.
    expect(s.headers["content-length"]).toBe(String(s.body.byteLength));
  });

  it("refuses a single-message call over 32 MiB without bothering the worker", async () => {
    const before = seen.length;
    const e = await unary(`${CAS}/FindMissingBlobs`, new Uint8Array(MAX_SINGLE_REQUEST_BYTES + 1)).catch((x: grpc.ServiceError) => x);
    expect(grpc.status[(e as grpc.ServiceError).code]).toBe("RESOURCE_EXHAUSTED");
    expect((e as grpc.ServiceError).details).toContain("over 33554432 bytes");
    expect(seen.length).toBe(before);
  });

  it("relays a server stream's messages, then its error status with details from the trailer frame", async () => {
    const pages = [1, 2, 3].map((n) => toBinary(GetTreeResponseSchema, create(GetTreeResponseSchema, { nextPageToken: `page-${n}` })));
    // google.rpc.Status{code: 9, message: "stale"}, as grpc-status-details-bin carries it.
    const details = Buffer.from([0x08, 0x09, 0x12, 0x05, ...Buffer.from("stale")]).toString("base64");
    answer = (res) => {
      res.writeHead(200, { "content-type": "application/grpc-web+proto" });
      const body = Buffer.concat([...pages.map((p) => frame(p)), trailerFrame({ "grpc-status": "9", "grpc-message": "stale%20tree", "grpc-status-details-bin": details })]);
      return dribble(res, body, 7);
    };
    const { done } = serverStream(`${CAS}/GetTree`, toBinary(GetTreeRequestSchema, create(GetTreeRequestSchema, { instanceName: "main" })));
    const { messages, error } = await done;
    expect(messages.map((m) => fromBinary(GetTreeResponseSchema, m).nextPageToken)).toEqual(["page-1", "page-2", "page-3"]);
    expect([grpc.status[error!.code], error!.details]).toEqual(["FAILED_PRECONDITION", "stale tree"]);
    expect(error!.metadata.get("grpc-status-details-bin")[0]).toEqual(Buffer.from(details, "base64"));
    expect(logged.some((l) => l.includes("ContentAddressableStorage/GetTree failed: FailedPrecondition"))).toBe(true);
  });

  it("passes a trailers-only status on", async () => {
    answer = (res) => {
      res.writeHead(200, { "content-type": "application/grpc-web+proto", "grpc-status": "16", "grpc-message": "who%20are%20you%3F%20key%3A%20%E2%80%9Cx%E2%80%9D%2F100%25" });
      res.end();
    };
    const e = await unary(`${CAS}/FindMissingBlobs`, new Uint8Array()).catch((x: grpc.ServiceError) => x);
    expect([grpc.status[(e as grpc.ServiceError).code], (e as grpc.ServiceError).details]).toEqual(["UNAUTHENTICATED", "who are you? key: “x”/100%"]);
  });

  it("maps an HTTP error, and a body that ends without trailers or inside a frame, to UNAVAILABLE", async () => {
    const cases: ((res: ServerResponse) => void)[] = [
      (res) => void res.writeHead(503).end("busy"),
      (res) => void res.writeHead(200, { "content-type": "application/grpc-web+proto" }).end(frame(Buffer.from("x"))),
      (res) => void res.writeHead(200, { "content-type": "application/grpc-web+proto" }).end(frame(Buffer.from("xyz")).subarray(0, 6)),
    ];
    for (const c of cases) {
      answer = c;
      const e = await unary(`${CAS}/FindMissingBlobs`, new Uint8Array()).catch((x: grpc.ServiceError) => x);
      expect(grpc.status[(e as grpc.ServiceError).code]).toBe("UNAVAILABLE");
    }
    // The worker's own error body: its status, message and details, whatever the HTTP status.
    answer = (res) =>
      void res.writeHead(400, { "content-type": "application/json" }).end(
        JSON.stringify({
          error: {
            code: 400,
            message: "2 blob(s) are not in the CAS",
            status: "FAILED_PRECONDITION",
            details: [{ "@type": "type.googleapis.com/google.rpc.PreconditionFailure", violations: [{ type: "MISSING", subject: `blobs/${"a".repeat(64)}/3` }] }],
          },
        }),
      );
    const worker400 = (await unary(`${CAS}/FindMissingBlobs`, new Uint8Array()).catch((x: grpc.ServiceError) => x)) as grpc.ServiceError;
    expect([grpc.status[worker400.code], worker400.details]).toEqual(["FAILED_PRECONDITION", "2 blob(s) are not in the CAS"]);
    const details = worker400.metadata.get("grpc-status-details-bin")[0] as Buffer;
    expect(fromBinary(StatusSchema, details).details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/google.rpc.PreconditionFailure"]);
    // A status whose answer a fetch Response cannot hold a body for (204): an error all the same.
    answer = (res) => void res.writeHead(204).end();
    const noContent = (await unary(`${CAS}/FindMissingBlobs`, new Uint8Array()).catch((x: grpc.ServiceError) => x)) as grpc.ServiceError;
    expect(grpc.status[noContent.code]).toBe("UNKNOWN");
    // 404 from something that is not the worker: the gRPC mapping of HTTP statuses.
    answer = (res) => void res.writeHead(404).end();
    const e = await unary(`${CAS}/FindMissingBlobs`, new Uint8Array()).catch((x: grpc.ServiceError) => x);
    expect(grpc.status[(e as grpc.ServiceError).code]).toBe("UNIMPLEMENTED");
  });

  it("a client that cancels before anything was answered ends that call only: the bridge answers the next one", async () => {
    const hash = createHash("sha256").update("x").digest("hex");
    const readOf = (size: number) => toBinary(ReadRequestSchema, create(ReadRequestSchema, { resourceName: `main/blobs/${hash}/${size}` }));
    const write = toBinary(WriteRequestSchema, create(WriteRequestSchema, { resourceName: `main/uploads/${randomUUID()}/blobs/${hash}/1`, finishWrite: true, data: Buffer.from("x") }));
    const calls: [string, (md: grpc.Metadata) => grpc.ClientUnaryCall | grpc.ClientReadableStream<Buffer> | grpc.ClientWritableStream<Buffer>][] = [
      ["a unary call", (md) => client.makeUnaryRequest(`${CAS}/FindMissingBlobs`, raw, raw, Buffer.alloc(0), md, () => {})],
      ["a small ByteStream.Read (node:http GET)", (md) => client.makeServerStreamRequest(`${BS}/Read`, raw, raw, Buffer.from(readOf(10)), md)],
      ["a large ByteStream.Read (GET off the socket)", (md) => client.makeServerStreamRequest(`${BS}/Read`, raw, raw, Buffer.from(readOf(2 * 1024 * 1024)), md)],
      [
        "a small ByteStream.Write (the batcher)",
        (md) => {
          const call = client.makeClientStreamRequest(`${BS}/Write`, raw, raw, md, () => {});
          call.write(Buffer.from(write));
          call.end();
          return call;
        },
      ],
    ];
    for (const [what, start] of calls) {
      const before = seen.length;
      answer = () => {}; // the worker never answers: the client gives up first
      const call = start(new grpc.Metadata()) as grpc.ClientReadableStream<Buffer>;
      call.on("error", () => {});
      const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
      await waitUntil(() => seen.length > before, what);
      call.cancel();
      expect(grpc.status[(await status).code], what).toBe("CANCELLED");
      await sleep(100); // whatever the bridge does with the closed stream happens now
      answer = (res) => void res.writeHead(200, { "content-type": "application/grpc-web+proto" }).end(Buffer.concat([frame(Buffer.alloc(0)), trailerFrame({ "grpc-status": "0" })]));
      expect(await unary(`${CAS}/FindMissingBlobs`, new Uint8Array()), what).toEqual(Buffer.alloc(0));
    }
  });

  it("a client that leaves many large reads unread (a slow link) does not make the bridge refuse its next call", async () => {
    const SIZE = 8 * 1024 * 1024;
    const blob = Buffer.alloc(SIZE, 7);
    answer = (res, call) => {
      if (call.url.endsWith("/FindMissingBlobs")) return void res.writeHead(200, { "content-type": "application/grpc-web+proto" }).end(Buffer.concat([frame(Buffer.alloc(0)), trailerFrame({ "grpc-status": "0" })]));
      res.writeHead(200, { "content-length": String(SIZE) }).end(blob);
    };
    const session = http2.connect(`http://127.0.0.1:${bridge.port}`);
    const read = toBinary(ReadRequestSchema, create(ReadRequestSchema, { resourceName: `main/blobs/${"a".repeat(64)}/${SIZE}` }));
    const grpcCall = (path: string, message: Uint8Array) => {
      const s = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
      s.end(Buffer.concat([frameHeader(message.byteLength), message]));
      return s;
    };
    try {
      // 16 x 8 MiB, never read: Node's default cap on a session's buffered memory is 10 MB.
      const unread = Array.from({ length: 16 }, () => grpcCall(`${BS}/Read`, read));
      for (const s of unread) s.on("error", () => {});
      await sleep(1000);
      const probe = grpcCall(`${CAS}/FindMissingBlobs`, new Uint8Array());
      probe.resume();
      const [trailers] = (await once(probe, "trailers")) as [http2.IncomingHttpHeaders];
      expect(trailers["grpc-status"]).toBe("0");
      expect(unread.every((s) => !s.rstCode)).toBe(true);
    } finally {
      session.destroy();
    }
  });

  it("a request it serves itself (JSON, compressed) is held to the same 32 MiB: over it, RESOURCE_EXHAUSTED before the worker hears of it", async () => {
    const before = seen.length;
    const session = http2.connect(`http://127.0.0.1:${bridge.port}`);
    try {
      const s = session.request({ ":method": "POST", ":path": `${CAS}/FindMissingBlobs`, "content-type": "application/grpc+json", te: "trailers" });
      s.on("error", () => {});
      const head = frameHeader(MAX_SINGLE_REQUEST_BYTES + 1);
      s.write(head);
      s.end(Buffer.alloc(1024, 0x20)); // the rest never comes: the declared length is enough
      s.resume();
      const status = await new Promise<string | undefined>((resolve) => {
        s.on("response", (h) => h["grpc-status"] !== undefined && resolve(String(h["grpc-status"])));
        s.on("trailers", (t) => resolve(String(t["grpc-status"])));
        s.on("close", () => resolve(undefined));
      });
      expect(grpc.status[Number(status)]).toBe("RESOURCE_EXHAUSTED");
      expect(seen.length).toBe(before);
    } finally {
      session.destroy();
    }
  });

  it("cancels the upstream request when the client cancels", async () => {
    answer = (res) => {
      res.writeHead(200, { "content-type": "application/grpc-web+proto" });
      res.write(frame(toBinary(GetTreeResponseSchema, create(GetTreeResponseSchema, { nextPageToken: "first" }))));
      // ...and never ends on its own.
    };
    const { call, done } = serverStream(`${CAS}/GetTree`, toBinary(GetTreeRequestSchema, create(GetTreeRequestSchema, { instanceName: "main" })));
    await once(call, "data");
    call.cancel();
    expect(grpc.status[(await done).error!.code]).toBe("CANCELLED");
    await seen.at(-1)!.closed; // the worker's side of the call is closed, not left hanging
  });
});
