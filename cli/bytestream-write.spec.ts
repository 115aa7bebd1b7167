// Small Writes through the bridge, from a grpc-js client, against a stand-in worker that holds each
// BatchUpdateBlobs until the test lets it answer: which Writes share a call, a Write cancelled while
// its batch is on the way, per-blob verdicts matched by digest (answered in reverse order), and a
// batch that fails as a whole. The real worker's side is in test/e2e/bridge-batched-writes.test.ts.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes, randomUUID } from "node:crypto";
import { setImmediate as tick } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { codeOf, connect, errorOf, sha256, writeSmall, type Clients } from "../test/e2e/grpc-client.ts";
import { startBridge, type Bridge } from "./bridge.ts";

interface Held {
  hashes: string[];
  /** Answers every blob OK but those in `refuse` (INVALID_ARGUMENT), or fails the call with `failure`. */
  release(failure?: ConnectError): void;
}

const held: Held[] = [];
const refuse = new Set<string>();
const worker = createServer(
  connectNodeAdapter({
    routes(router) {
      router.service(ContentAddressableStorage, {
        async batchUpdateBlobs(req) {
          const outcome = await new Promise<ConnectError | undefined>((resolve) =>
            held.push({ hashes: req.requests.map((r) => r.digest!.hash), release: resolve }),
          );
          if (outcome) throw outcome;
          const responses = req.requests.map((r) => ({
            digest: r.digest,
            status: refuse.has(r.digest!.hash) ? { code: Code.InvalidArgument, message: `blob ${r.digest!.hash}: refused` } : { code: 0 },
          }));
          return { responses: responses.reverse() };
        },
      });
    },
  }),
);

let bridge: Bridge;
let c: Clients;

beforeAll(async () => {
  await new Promise<void>((resolve) => worker.listen(0, "127.0.0.1", resolve));
  bridge = await startBridge({ upstream: `http://127.0.0.1:${(worker.address() as AddressInfo).port}`, port: 0, log: () => {}, chunkAboveBytes: 0 });
  c = connect(`127.0.0.1:${bridge.port}`);
});
afterAll(async () => {
  c?.close();
  await bridge?.close();
  worker.close();
});

/** Waits (without a clock) until the stand-in holds `n` batches. */
async function batches(n: number): Promise<Held[]> {
  while (held.length < n) await tick();
  return held.slice(0, n);
}

const blobs = (n: number) => Array.from({ length: n }, () => randomBytes(1024));
const start = (blob: Uint8Array) => writeSmall(c.bytestream, `uploads/${randomUUID()}/blobs/${sha256(blob)}/${blob.byteLength}`, blob);

describe("small Writes through the bridge, against a stand-in worker", () => {
  it("share calls; each gets its own verdict, a cancelled one fails alone, a failed call fails all in it", async () => {
    held.length = 0;
    const [first, ...rest] = blobs(9);
    const a = start(first!);
    const [one] = await batches(1);
    expect(one!.hashes).toEqual([sha256(first!)]);

    // Eight more while the first is held: they leave together as a second batch.
    refuse.add(sha256(rest[3]!));
    const writes = rest.map(start);
    const [, two] = await batches(2);
    expect([...two!.hashes].sort()).toEqual(rest.map(sha256).sort());

    // One of them cancelled while its batch is on the way: the batch goes on for the others.
    writes[1]!.call.cancel();
    expect(await codeOf(writes[1]!.response)).toBe("CANCELLED");
    one!.release();
    two!.release();
    expect((await a.response).committed_size).toBe("1024");
    const codes = await Promise.all(writes.map((w) => codeOf(w.response)));
    expect(codes).toEqual(["OK", "CANCELLED", "OK", "INVALID_ARGUMENT", "OK", "OK", "OK", "OK"]);
    // The message as the worker worded it (the bridge percent-encodes grpc-message as the spec says,
    // which grpc-js decodes whole).
    expect((await errorOf(writes[3]!.response)).details).toBe(`blob ${sha256(rest[3]!)}: refused`);

    // A call that fails as a whole fails every Write in it, and the lane carries on.
    const [x, ...ys] = blobs(9).map(start);
    const [, , three] = await batches(3);
    const [, , , four] = await batches(4);
    expect([three!.hashes.length, four!.hashes.length]).toEqual([1, 8]);
    four!.release(new ConnectError("the worker is away", Code.Unavailable));
    expect(await Promise.all(ys.map((w) => codeOf(w.response)))).toEqual(Array(8).fill("UNAVAILABLE"));
    three!.release();
    expect(await codeOf(x!.response)).toBe("OK");
  });
});
