// A Write the bridge relays as a gRPC-web client stream (a compressed-blobs name) whose upstream
// connection breaks while the bridge still sends: the client must get UNAVAILABLE, a status it
// retries, not INTERNAL ("write EPIPE") or ABORTED, which read as final answers. Also when the
// worker answered before it closed: connect-node reports the broken write, not the answer (the
// real worker reads a Write's whole body before answering, see src/surfaces/connect.ts).
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes, randomUUID } from "node:crypto";
import { trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, errorOf, grpc, sha256, type Clients } from "../test/e2e/grpc-client.ts";
import { startBridge, type Bridge } from "./bridge.ts";
import { frameHeader } from "./grpc-web-frames.ts";

const seen: string[] = [];
/** Whether the stand-in answers (an error trailer) before it drops the connection. */
let answerFirst = false;
/** The stand-in worker reads the start of a Write's body, then drops the connection. */
const worker = createServer((req: IncomingMessage, res: ServerResponse) => {
  seen.push(req.url ?? "");
  req.once("data", () => {
    if (!answerFirst) return req.socket.destroy();
    const trailer = trailerSerialize(new Headers({ "grpc-status": "3", "grpc-message": "corrupt" }));
    const head = frameHeader(trailer.byteLength);
    head[0] = 0x80;
    res.writeHead(200, { "content-type": "application/grpc-web+proto", connection: "close" });
    res.end(Buffer.concat([head, trailer]), () => req.socket.destroy());
  });
});

let bridge: Bridge;
let c: Clients;

beforeAll(async () => {
  await new Promise<void>((resolve) => worker.listen(0, "127.0.0.1", resolve));
  bridge = await startBridge({ upstream: `http://127.0.0.1:${(worker.address() as AddressInfo).port}`, port: 0, log: () => {} });
  c = connect(`127.0.0.1:${bridge.port}`);
});
afterAll(async () => {
  c?.close();
  await bridge?.close();
  worker.close();
});

/** A Write of `pieces` messages of 256 KiB each, all queued at once so the bridge is still sending when the worker goes. */
function write(resource: string, pieces: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const call = c.bytestream.write(new grpc.Metadata(), { deadline: Date.now() + 60_000 }, (err: grpc.ServiceError | null, res: unknown) =>
      err ? reject(err) : resolve(res),
    );
    for (let i = 0; i < pieces; i++) {
      call.write({
        resource_name: i === 0 ? resource : "",
        write_offset: String(i * 256 * 1024),
        data: randomBytes(256 * 1024),
        finish_write: i === pieces - 1,
      });
    }
    call.end();
  });
}

describe("a relayed Write whose connection to the worker breaks", () => {
  it.each([false, true])("is UNAVAILABLE with the reason, for the client to retry (answered first: %s)", async (answers) => {
    answerFirst = answers;
    const name = `e2e/uploads/${randomUUID()}/compressed-blobs/zstd/${sha256("x")}/${64 * 1024 * 1024}`;
    const e = await errorOf(write(name, 64));
    expect(grpc.status[e.code], e.details).toBe("UNAVAILABLE");
    expect(e.details).toMatch(/connection to the worker broke/);
    expect(seen.at(-1)).toBe("/google.bytestream.ByteStream/Write");
  });
});
