// Per-key request rates: over the RATE_LIMIT binding's limit, every surface answers
// RESOURCE_EXHAUSTED with a google.rpc.RetryInfo (Connect, gRPC-web) or 429 with Retry-After (HTTP).
// The binding here is miniflare's implementation of the Workers one, swapped for a 4-a-minute
// limiter (vitest.config.mts) so the limit is reached in a few calls.
import { SELF, env } from "cloudflare:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ActionResultSchema,
  BatchUpdateBlobsRequestSchema,
  Capabilities,
  ContentAddressableStorage,
  FindMissingBlobsRequestSchema,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ErrorInfoSchema, RetryInfoSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { CasIndex } from "../../src/storage/cas-index.ts";
import { envelope } from "./grpc-web-lane-helpers.ts";
import { bytes, casHolds, connectClient, digestOf, grpcWebClient } from "./helpers.ts";

const LIMIT = 4;
/**
 * Calls until one is refused. The limiter's window may turn over once during the calls, so the
 * refusal comes by call 2 * LIMIT + 1; a limiter that never refuses fails the test.
 */
async function untilRefused<T>(call: () => Promise<T>, refused: (r: T) => boolean): Promise<{ result: T; calls: number }> {
  for (let calls = 1; calls <= 2 * LIMIT + 1; calls++) {
    const result = await call();
    if (refused(result)) return { result, calls };
  }
  throw new Error(`no call of ${2 * LIMIT + 1} was refused`);
}

const settle = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

function newKey(name: string) {
  return { name: `${name}-${crypto.randomUUID().slice(0, 8)}`, key: crypto.randomUUID() + crypto.randomUUID() };
}

describe("rate limiting per API key", () => {
  const keys = { connect: newKey("connect"), grpcWeb: newKey("grpc-web"), http: newKey("http"), other: newKey("other") };
  const saved = { limiter: env.RATE_LIMIT, period: env.RATE_LIMIT_PERIOD_SECONDS, apiKeys: env.API_KEYS };
  beforeAll(() => {
    env.RATE_LIMIT = env.TIGHT_RATE_LIMIT;
    env.RATE_LIMIT_PERIOD_SECONDS = "60";
    env.API_KEYS = JSON.stringify(Object.values(keys));
  });
  afterAll(() => {
    env.RATE_LIMIT = saved.limiter;
    env.RATE_LIMIT_PERIOD_SECONDS = saved.period;
    env.API_KEYS = saved.apiKeys;
  });
  const auth = (k: { key: string }) => ({ authorization: `Bearer ${k.key}` });

  it("Connect: RESOURCE_EXHAUSTED with RetryInfo of the binding's period, and other keys keep their own budget", async () => {
    const caps = connectClient(Capabilities, auth(keys.connect));
    const { result: err, calls } = await untilRefused(() => settle(caps.getCapabilities({ instanceName: "rl" })), (e) => e !== undefined);
    expect(calls).toBeGreaterThan(LIMIT);
    expect(err!.code).toBe(Code.ResourceExhausted);
    expect(err!.rawMessage).toContain(`API key "${keys.connect.name}" is over its request rate`);
    const [retry] = err!.findDetails(RetryInfoSchema);
    expect(retry?.retryDelay?.seconds).toBe(60n);
    expect(err!.findDetails(ErrorInfoSchema)[0]?.reason).toBe("RATE_LIMITED");
    // Another key is counted on its own.
    await connectClient(Capabilities, auth(keys.other)).getCapabilities({ instanceName: "rl" });
  });

  it("gRPC-web: RESOURCE_EXHAUSTED with RetryInfo in grpc-status-details-bin", async () => {
    const caps = grpcWebClient(Capabilities, auth(keys.grpcWeb));
    const { result: err } = await untilRefused(() => settle(caps.getCapabilities({ instanceName: "rl" })), (e) => e !== undefined);
    expect(err!.code).toBe(Code.ResourceExhausted);
    expect(err!.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds).toBe(60n);
  });

  it("HTTP cache: 429 with Retry-After and the googleapis error body", async () => {
    const get = () => SELF.fetch(`http://kiln/cache/rl/ac/${"a".repeat(64)}`, { headers: auth(keys.http) });
    const { result: res } = await untilRefused(get, (r) => r.status !== 404);
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("60");
    const body = (await res.json()) as { error: { status: string; message: string; details: { "@type": string; retryDelay?: string }[] } };
    expect(body.error.status).toBe("RESOURCE_EXHAUSTED");
    expect(body.error.details.find((d) => d["@type"].endsWith("google.rpc.RetryInfo"))?.retryDelay).toBe("60s");
  });

  it("callers without a valid key are counted by address, so guessing keys is limited too", async () => {
    const ip = `192.0.2.${Math.floor(Math.random() * 250) + 1}`;
    const guess = () => SELF.fetch(`http://kiln/cache/rl/ac/${"b".repeat(64)}`, { headers: { authorization: "Bearer wrong-" + "x".repeat(40), "cf-connecting-ip": ip } });
    const { result: res } = await untilRefused(guess, (r) => r.status !== 401);
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("60");
  });
});

describe("when the rate verdict is awaited", () => {
  const saved = env.RATE_LIMIT;
  afterEach(() => void (env.RATE_LIMIT = saved));
  /** A limiter whose every verdict is `verdict()`, recording the keys it was asked about. */
  function limiter(verdict: () => Promise<boolean>) {
    const keys: string[] = [];
    env.RATE_LIMIT = { limit: async ({ key }: { key: string }) => (keys.push(key), { success: await verdict() }) } as RateLimit;
    return keys;
  }
  /** A request body of `data` that calls `onEnd` when read to its end. */
  const bodyOf = (data: Uint8Array, onEnd: () => void) => {
    let sent = false;
    return new ReadableStream<Uint8Array>({
      pull(c) {
        if (!sent) {
          c.enqueue(data);
          sent = true;
          return;
        }
        c.close();
        onEnd();
      },
    });
  };
  const blob = () => bytes(`rate verdict ${crypto.randomUUID()}`);

  it("counts while the body arrives: the verdict can wait for the whole body (Connect router, FindMissing lane)", async () => {
    const data = blob();
    const d = await digestOf(data);
    const calls = [
      {
        path: "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
        type: "application/proto",
        body: toBinary(BatchUpdateBlobsRequestSchema, create(BatchUpdateBlobsRequestSchema, { requests: [{ digest: d, data }] })),
      },
      {
        path: "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
        type: "application/grpc-web+proto",
        body: envelope(toBinary(FindMissingBlobsRequestSchema, create(FindMissingBlobsRequestSchema, { blobDigests: [d] }))),
      },
    ];
    for (const call of calls) {
      let bodyRead!: () => void;
      const read = new Promise<string>((resolve) => (bodyRead = () => resolve("the body was read")));
      const waited = new Promise<string>((resolve) => setTimeout(() => resolve("waited 5 s, the body unread"), 5000));
      let verdictAfter = "";
      limiter(async () => ((verdictAfter = await Promise.race([read, waited])), true));
      const res = await SELF.fetch(`http://kiln${call.path}`, { method: "POST", headers: { "content-type": call.type }, body: bodyOf(call.body, bodyRead) });
      expect(res.status, call.path).toBe(200);
      await res.arrayBuffer();
      expect(verdictAfter, call.path).toBe("the body was read");
    }
  });

  it("does no work for a refused request: nothing stored, nothing looked up", async () => {
    const keys = limiter(async () => false);
    const data = blob();
    const d = await digestOf(data);
    const cas = connectClient(ContentAddressableStorage);
    expect((await settle(cas.batchUpdateBlobs({ requests: [{ digest: d, data }] })))?.code).toBe(Code.ResourceExhausted);
    expect(await casHolds(d.hash)).toBe(false);
    const shard = new CasIndex(env, "default").shard(d.hash);
    const served = (await shard.servedStats()).requests;
    expect((await settle(grpcWebClient(ContentAddressableStorage).findMissingBlobs({ blobDigests: [d] })))?.code).toBe(Code.ResourceExhausted);
    expect((await shard.servedStats()).requests).toBe(served);
    const acPut = await SELF.fetch(`http://kiln/cache/ac/${d.hash}`, { method: "PUT", body: toBinary(ActionResultSchema, create(ActionResultSchema, { exitCode: 3 })) });
    expect(acPut.status).toBe(429);
    limiter(async () => true);
    expect((await SELF.fetch(`http://kiln/cache/ac/${d.hash}`)).status).toBe(404);
    expect(keys).toHaveLength(3);
  });

  it("counts each request once, whichever way it goes through the worker", async () => {
    const keys = limiter(async () => true);
    const d = await digestOf(blob());
    await connectClient(Capabilities).getCapabilities({});
    await connectClient(ContentAddressableStorage).findMissingBlobs({ blobDigests: [d] }); // the router
    await grpcWebClient(ContentAddressableStorage).findMissingBlobs({ blobDigests: [d] }); // the lane
    // A gRPC-web request the lane hands to the router: JSON.
    const json = await SELF.fetch("http://kiln/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs", {
      method: "POST",
      headers: { "content-type": "application/grpc-web+json" },
      body: envelope(bytes(JSON.stringify({ blobDigests: [{ hash: d.hash, sizeBytes: String(d.sizeBytes) }] }))),
    });
    expect(json.headers.get("grpc-status") ?? "0").toBe("0");
    await json.arrayBuffer();
    expect((await SELF.fetch(`http://kiln/cache/ac/${d.hash}`, { method: "PUT", body: toBinary(ActionResultSchema, create(ActionResultSchema, {})) })).status).toBe(200);
    expect(keys).toHaveLength(5);
  });
});
