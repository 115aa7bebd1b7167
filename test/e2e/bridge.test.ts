// The stack starts and the native gRPC bridge carries real @grpc/grpc-js calls to the worker:
// unary, ByteStream.Read as a streamed GET (ranges, edges), ByteStream.Write as a streamed PUT, or
// in a batch when small (and its checks), a resumed Write over gRPC-web, API keys on every path,
// and an unreachable worker. Batching itself: bridge-batched-writes.test.ts.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBridge } from "../../cli/bridge.ts";
import { peakRss, sampleRss, startStack, type Stack } from "./stack.ts";

// ---- a grpc-js client from the .proto files, as a third-party client would build it ----

const root = fileURLToPath(new URL("../../", import.meta.url));
const definition = protoLoader.loadSync(
  ["build/bazel/remote/execution/v2/remote_execution.proto", "google/bytestream/bytestream.proto"],
  { keepCase: true, longs: String, enums: String, defaults: true, includeDirs: [`${root}proto`, `${root}node_modules/google-proto-files`] },
);
// grpc-js builds client classes at run time from the definition: there are no static types.
const pkg = grpc.loadPackageDefinition(definition) as any;
const reapi = pkg.build.bazel.remote.execution.v2;

type Client = grpc.Client & Record<string, any>;
const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function clients(target: string) {
  const creds = grpc.credentials.createInsecure();
  return {
    caps: new reapi.Capabilities(target, creds) as Client,
    cas: new reapi.ContentAddressableStorage(target, creds) as Client,
    bs: new pkg.google.bytestream.ByteStream(target, creds) as Client,
  };
}

function metadata(key?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (key) md.set("authorization", `Bearer ${key}`);
  return md;
}

function unary<T = any>(client: Client, method: string, req: object, md = metadata()): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](req, md, { deadline: Date.now() + 60_000 }, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res))),
  );
}

/** The status name a call settles with ("OK" if it succeeds). */
async function statusOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (e) {
    return grpc.status[(e as grpc.ServiceError).code]!;
  }
}

const uploadName = (blob: Uint8Array, uuid = randomUUID()) => `uploads/${uuid}/blobs/${sha256(blob)}/${blob.byteLength}`;

/** The bytes [from, to) of a blob. */
type Bytes = (from: number, to: number) => Uint8Array;
const within = (blob: Uint8Array): Bytes => (from, to) => blob.subarray(from, to);

interface WriteCall {
  call: grpc.ClientWritableStream<object>;
  response: Promise<{ committed_size: string }>;
  /** Sends bytes [from, to) in `chunk`-sized messages (the first names the resource), honouring backpressure. */
  send(from: number, to: number, finish: boolean): Promise<void>;
}

function startWrite(bs: Client, resource: string, bytes: Bytes, md = metadata(), chunk = 64 * 1024): WriteCall {
  let call!: grpc.ClientWritableStream<object>;
  const response = new Promise<{ committed_size: string }>((resolve, reject) => {
    call = bs.Write(md, (err: grpc.ServiceError | null, res: { committed_size: string }) => (err ? reject(err) : resolve(res)));
  });
  // The server may answer before everything is sent (a stored blob, a refusal): then sending stops.
  let answered = false;
  const settled = response.then(
    () => void (answered = true),
    () => void (answered = true),
  );
  let first = true;
  return {
    call,
    response,
    async send(from, to, finish) {
      // At least one message, so that the empty blob is written too.
      for (let off = from; (off < to || first) && !answered; off += chunk) {
        const end = Math.min(off + chunk, to);
        const msg = { resource_name: first ? resource : "", write_offset: off, data: bytes(off, end), finish_write: finish && end === to };
        first = false;
        if (!call.write(msg)) await Promise.race([once(call, "drain"), settled]);
      }
      if (finish && !answered) call.end();
    },
  };
}

async function write(bs: Client, resource: string, blob: Uint8Array, md = metadata()) {
  const w = startWrite(bs, resource, within(blob), md);
  await w.send(0, blob.byteLength, true);
  return w.response;
}

/** ByteStream.Read, server streaming: the hash of what arrived, its size and how many messages. */
function read(bs: Client, resource: string, offset = 0, limit = 0, md = metadata()): Promise<{ hash: string; size: number; messages: number }> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    let size = 0;
    let messages = 0;
    const call = bs.Read({ resource_name: resource, read_offset: offset, read_limit: limit }, md);
    call.on("data", (m: { data: Uint8Array }) => {
      h.update(m.data);
      size += m.data.byteLength;
      messages++;
    });
    call.on("error", reject);
    call.on("end", () => resolve({ hash: h.digest("hex"), size, messages }));
  });
}

// ---- tests ----

describe("the stack, open (no API keys)", () => {
  let stack: Stack;
  let c: ReturnType<typeof clients>;

  beforeAll(async () => {
    // Resumable uploads from 8 MiB (the default is 1 GiB), so the resume tests stay small.
    stack = await startStack({ vars: { RESUMABLE_UPLOAD_ABOVE_BYTES: String(8 * MiB) } });
    c = clients(stack.grpcTarget);
  });
  afterAll(async () => {
    for (const client of Object.values(c ?? {})) client.close();
    await stack?.stop();
  });

  it("the worker answers /healthz and runs open", async () => {
    const res = await fetch(`${stack.httpUrl}/healthz`);
    expect(await res.json()).toEqual({ ok: true, auth: "open" });
    expect(stack.workerPids().length).toBeGreaterThan(0);
  });

  it("GetCapabilities through the bridge advertises SHA256 for the cache", async () => {
    const caps = await unary(c.caps, "GetCapabilities", { instance_name: "" });
    expect(caps.cache_capabilities.digest_functions).toContain("SHA256");
  });

  it("Write streams a 20 MiB blob (several worker parts) and Read streams it back", async () => {
    const blob = randomBytes(20 * MiB);
    const res = await write(c.bs, `main/${uploadName(blob)}`, blob);
    expect(res.committed_size).toBe(String(blob.byteLength));
    const back = await read(c.bs, `main/blobs/${sha256(blob)}/${blob.byteLength}`);
    expect(back).toMatchObject({ hash: sha256(blob), size: blob.byteLength });
    expect(back.messages).toBeGreaterThan(1);
    const missing = await unary(c.cas, "FindMissingBlobs", { instance_name: "main", blob_digests: [{ hash: sha256(blob), size_bytes: blob.byteLength }] });
    expect(missing.missing_blob_digests).toEqual([]);
  });

  it("Read honours read_offset and read_limit, and the edges of a blob", async () => {
    const blob = randomBytes(100_000);
    await write(c.bs, uploadName(blob), blob);
    const name = `blobs/${sha256(blob)}/${blob.byteLength}`;
    const part = (from: number, to: number) => ({ hash: sha256(blob.subarray(from, to)), size: to - from });
    expect(await read(c.bs, name, 1000, 500)).toMatchObject(part(1000, 1500));
    expect(await read(c.bs, name, 99_000)).toMatchObject(part(99_000, 100_000));
    expect(await read(c.bs, name, 99_000, 5000)).toMatchObject(part(99_000, 100_000));
    expect(await read(c.bs, name, 100_000)).toMatchObject({ size: 0 });
    expect(await statusOf(read(c.bs, name, 100_001))).toBe("OUT_OF_RANGE");
    expect(await statusOf(read(c.bs, name, -1))).toBe("OUT_OF_RANGE");
    expect(await statusOf(read(c.bs, `blobs/${sha256(randomBytes(10))}/10`))).toBe("NOT_FOUND");
    expect(await statusOf(read(c.bs, `blobs/nothex/10`))).toBe("INVALID_ARGUMENT");
  });

  it("Write of the empty blob, and of a blob already stored, commits its size", async () => {
    const empty = new Uint8Array(0);
    expect((await write(c.bs, uploadName(empty), empty)).committed_size).toBe("0");
    const blob = randomBytes(3 * MiB);
    await write(c.bs, uploadName(blob), blob);
    expect((await write(c.bs, uploadName(blob), blob)).committed_size).toBe(String(blob.byteLength));
  });

  it("Write under a multi-segment instance name", async () => {
    const blob = randomBytes(1000);
    await write(c.bs, `a/b/${uploadName(blob)}`, blob);
    expect((await read(c.bs, `a/b/blobs/${sha256(blob)}/1000`)).hash).toBe(sha256(blob));
  });

  it("Write whose bytes do not match the digest is INVALID_ARGUMENT (the worker's 400, as gRPC)", async () => {
    const blob = randomBytes(1000);
    const wrong = `uploads/${randomUUID()}/blobs/${sha256(randomBytes(8))}/1000`;
    const err = await write(c.bs, wrong, blob).catch((e: grpc.ServiceError) => e);
    expect(grpc.status[(err as grpc.ServiceError).code]).toBe("INVALID_ARGUMENT");
    expect(await statusOf(read(c.bs, wrong.replace(/^uploads\/[^/]+\//, "")))).toBe("NOT_FOUND");
  });

  it("Write with a gap in write_offset, or past the declared size, is INVALID_ARGUMENT", async () => {
    const blob = randomBytes(200 * 1024);
    const gap = startWrite(c.bs, uploadName(blob), within(blob));
    await gap.send(0, 64 * 1024, false);
    gap.call.write({ write_offset: 100 * 1024, data: blob.subarray(100 * 1024), finish_write: true });
    gap.call.end();
    expect(await statusOf(gap.response)).toBe("INVALID_ARGUMENT");

    const long = Buffer.concat([blob, Buffer.from("extra")]);
    const over = startWrite(c.bs, uploadName(blob), within(long));
    await over.send(0, long.byteLength, true);
    expect(await statusOf(over.response)).toBe("INVALID_ARGUMENT");
  });

  it("a Write closed before finish_write answers what was committed (0 for one put), then completes from 0", async () => {
    for (const size of [1000, 3 * MiB]) {
      const blob = randomBytes(size);
      const half = startWrite(c.bs, uploadName(blob), within(blob));
      await half.send(0, size / 2, false);
      half.call.end();
      expect((await half.response).committed_size, `${size} bytes`).toBe("0");
      expect((await write(c.bs, uploadName(blob), blob)).committed_size).toBe(String(size));
    }
  });

  it("a Write of a stored blob completes without the rest of the data", async () => {
    const blob = randomBytes(2 * MiB);
    await write(c.bs, uploadName(blob), blob);
    const again = startWrite(c.bs, uploadName(blob), within(blob));
    await again.send(0, MiB, false);
    expect((await again.response).committed_size).toBe(String(2 * MiB));
    again.call.cancel();
  });

  it("neither the bridge nor the client holds a 128 MiB blob in memory", async () => {
    // 128 MiB of a repeated random MiB: cheap to make, and its hash is still one nobody stored.
    const block = randomBytes(MiB);
    const size = 128 * MiB;
    const h = createHash("sha256");
    for (let i = 0; i < 128; i++) h.update(block);
    const hash = h.digest("hex");
    const before = sampleRss([process.pid]);
    const rss = peakRss(() => [process.pid]);
    rss.start();
    const w = startWrite(c.bs, `uploads/${randomUUID()}/blobs/${hash}/${size}`, (from, to) => block.subarray(0, to - from), metadata(), MiB);
    await w.send(0, size, true);
    expect((await w.response).committed_size).toBe(String(size));
    const back = await read(c.bs, `blobs/${hash}/${size}`);
    expect(back).toMatchObject({ hash, size });
    expect(rss.stop() - before).toBeLessThan(64 * MiB);
  });

  it("a Write at offset 0 into a partly committed upload is refused without the rest of the data", async () => {
    const blob = randomBytes(10 * MiB);
    const resource = uploadName(blob);
    expect(await dropAfterFirstPart(resource, blob, 9 * MiB)).toBe(String(8 * MiB));
    const again = startWrite(c.bs, resource, within(blob));
    await again.send(0, MiB, false);
    expect(await statusOf(again.response)).toBe("INVALID_ARGUMENT");
    again.call.cancel();
  });

  it("a dropped Write resumes at committed_size (the resumed stream goes as gRPC-web)", async () => {
    const blob = randomBytes(20 * MiB);
    const resource = uploadName(blob);
    const committed = await dropAfterFirstPart(resource, blob, 12 * MiB);
    expect(committed).toBe(String(8 * MiB));
    const resumed = startWrite(c.bs, resource, within(blob));
    await resumed.send(Number(committed), blob.byteLength, true);
    expect((await resumed.response).committed_size).toBe(String(blob.byteLength));
    expect((await read(c.bs, `blobs/${sha256(blob)}/${blob.byteLength}`)).hash).toBe(sha256(blob));
  });

  /** Sends `sent` bytes of a Write, waits until the worker has committed its first 8 MiB part, drops the stream; the committed size. */
  async function dropAfterFirstPart(resource: string, blob: Uint8Array, sent: number): Promise<string> {
    const w = startWrite(c.bs, resource, within(blob));
    await w.send(0, sent, false);
    let committed = "0";
    for (const end = Date.now() + 30_000; committed === "0" && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      committed = (await unary(c.bs, "QueryWriteStatus", { resource_name: resource }).catch(() => ({ committed_size: "0" }))).committed_size;
    }
    w.call.cancel();
    expect(await statusOf(w.response)).toBe("CANCELLED");
    return committed;
  }
});

describe("the stack with API keys", () => {
  const KEY = "bridge-test-key-1234-0123456789a";
  let stack: Stack;
  let c: ReturnType<typeof clients>;

  beforeAll(async () => {
    stack = await startStack({ vars: { API_KEYS: JSON.stringify([{ key: KEY, instances: [""], access: "read-write" }]) } });
    c = clients(stack.grpcTarget);
  });
  afterAll(async () => {
    for (const client of Object.values(c ?? {})) client.close();
    await stack?.stop();
  });

  it("/healthz says keys are required", async () => {
    expect(await (await fetch(`${stack.httpUrl}/healthz`)).json()).toEqual({ ok: true, auth: "keys" });
  });

  it("the bridge forwards authorization on calls, the Read GET and the Write PUT", async () => {
    expect(await statusOf(unary(c.caps, "GetCapabilities", {}))).toBe("UNAUTHENTICATED");
    expect(await statusOf(unary(c.caps, "GetCapabilities", {}, metadata(KEY)))).toBe("OK");
    const blob = randomBytes(5000);
    expect(await statusOf(write(c.bs, uploadName(blob), blob))).toBe("UNAUTHENTICATED");
    expect(await statusOf(write(c.bs, uploadName(blob), blob, metadata(KEY)))).toBe("OK");
    const name = `blobs/${sha256(blob)}/${blob.byteLength}`;
    expect(await statusOf(read(c.bs, name))).toBe("UNAUTHENTICATED");
    expect(await read(c.bs, name, 0, 0, metadata(KEY))).toMatchObject({ hash: sha256(blob) });
  });
});

describe("the bridge without a worker behind it", () => {
  it("answers UNAVAILABLE and keeps serving", async () => {
    const bridge = await startBridge({ upstream: "http://127.0.0.1:9", port: 0, log: () => {} });
    const c = clients(`127.0.0.1:${bridge.port}`);
    try {
      expect(await statusOf(unary(c.caps, "GetCapabilities", {}))).toBe("UNAVAILABLE");
      const blob = randomBytes(100);
      expect(await statusOf(write(c.bs, uploadName(blob), blob))).toBe("UNAVAILABLE");
      expect(await statusOf(read(c.bs, `blobs/${sha256(blob)}/100`))).toBe("UNAVAILABLE");
      expect(await statusOf(unary(c.caps, "GetCapabilities", {}))).toBe("UNAVAILABLE");
    } finally {
      for (const client of Object.values(c)) client.close();
      await bridge.close();
    }
  });
});

describe("what the bridge sends to the worker", () => {
  it("call metadata and the deadline, not the client's transport headers; errors come back as statuses", async () => {
    // A stand-in worker that records each request and refuses it: NOT_FOUND as gRPC-web
    // (trailers-only) for calls, as a REST JSON error for the blob PUT.
    const seen: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];
    const worker = createServer((req, res) => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers });
      req.resume();
      if (req.method === "PUT") {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: 404, message: "gone", status: "NOT_FOUND" } }));
      } else {
        res.writeHead(200, { "content-type": "application/grpc-web+proto", "grpc-status": "5", "grpc-message": "nope" });
        res.end();
      }
    });
    await new Promise<void>((resolve) => worker.listen(0, "127.0.0.1", resolve));
    const bridge = await startBridge({ upstream: `http://127.0.0.1:${(worker.address() as AddressInfo).port}`, port: 0, log: () => {} });
    const c = clients(`127.0.0.1:${bridge.port}`);
    const md = metadata("k1");
    md.set("x-trace", "t1");
    md.set("build.bazel.remote.execution.v2.requestmetadata-bin", Buffer.from([1, 2, 3]));
    try {
      const err = await new Promise<grpc.ServiceError>((resolve) =>
        c.caps.GetCapabilities({}, md, { deadline: Date.now() + 5000 }, (e: grpc.ServiceError) => resolve(e)),
      );
      expect([grpc.status[err.code], err.details]).toEqual(["NOT_FOUND", "nope"]);
      // A small blob goes in a BatchUpdateBlobs, which carries the credentials and nothing of one
      // caller's own (other Writes may share it); a larger one is a PUT with all the metadata.
      const small = randomBytes(100);
      const serr = await write(c.bs, uploadName(small), small, md).catch((e: grpc.ServiceError) => e);
      expect([grpc.status[(serr as grpc.ServiceError).code], (serr as grpc.ServiceError).details]).toEqual(["NOT_FOUND", "nope"]);
      const blob = randomBytes(100 * 1024);
      const werr = await write(c.bs, uploadName(blob), blob, md).catch((e: grpc.ServiceError) => e);
      expect([grpc.status[(werr as grpc.ServiceError).code], (werr as grpc.ServiceError).details]).toEqual(["NOT_FOUND", "gone"]);

      // The small blob: the worker's batch limit (asked once per instance and key; refused here,
      // so the batch goes as it is), then the batch. The Write of a larger blob: QueryWriteStatus,
      // whether to chunk it, the PUT, and after its failure QueryWriteStatus again (the blob might
      // have been stored meanwhile).
      expect(seen.map((r) => `${r.method} ${r.url.replace(/[0-9a-f-]{36}\/blobs\/[0-9a-f]{64}/, "U/blobs/H")}`)).toEqual([
        "POST /build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
        "POST /build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
        "POST /build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
        "POST /google.bytestream.ByteStream/QueryWriteStatus",
        "POST /build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
        "PUT /uploads/U/blobs/H/102400",
        "POST /google.bytestream.ByteStream/QueryWriteStatus",
      ]);
      const [call, limit, batch, , , put] = seen;
      expect(limit!.headers.authorization).toBe("Bearer k1");
      expect(put!.headers["content-length"]).toBe("102400");
      expect(batch!.headers.authorization).toBe("Bearer k1");
      expect(batch!.headers["x-trace"]).toBeUndefined();
      expect(batch!.headers["build.bazel.remote.execution.v2.requestmetadata-bin"]).toBeUndefined();
      for (const { headers } of [call!, put!]) {
        expect(headers).toMatchObject({
          authorization: "Bearer k1",
          "x-trace": "t1",
          "build.bazel.remote.execution.v2.requestmetadata-bin": Buffer.from([1, 2, 3]).toString("base64").replace(/=+$/, ""),
        });
      }
      for (const { headers } of [call!, batch!, put!]) {
        expect(headers["user-agent"] ?? "").not.toContain("grpc-node");
        expect(headers.te).toBeUndefined();
      }
      const timeout = /^(\d+)m$/.exec(String(call!.headers["grpc-timeout"]));
      expect(Number(timeout?.[1])).toBeGreaterThan(0);
      expect(Number(timeout?.[1])).toBeLessThanOrEqual(5000);
    } finally {
      for (const client of Object.values(c)) client.close();
      await bridge.close();
      worker.close();
    }
  });
});

describe("ByteStream.Read of 1 MiB or more through the bridge (the GET's body read off the socket)", () => {
  // A stand-in worker whose answer to a blob GET depends on the blob's hash: a blob, the blob cut
  // short, the blob chunked (no Content-Length), a JSON NOT_FOUND, or a blob sent slowly.
  const blob = randomBytes(3 * MiB + 1234);
  const hashFor = (what: string) => createHash("sha256").update(what).digest("hex");
  const other = randomBytes(blob.byteLength);
  const cases = new Map(["whole", "other", "short", "chunked", "missing", "slow", "norange"].map((w) => [hashFor(w), w]));
  const seen: { url: string; headers: IncomingHttpHeaders }[] = [];
  let slowClosed: Promise<void> | undefined;
  let worker: ReturnType<typeof createServer>;
  let bridge: Awaited<ReturnType<typeof startBridge>>;
  let c: ReturnType<typeof clients>;

  beforeAll(async () => {
    worker = createServer((req, res) => {
      seen.push({ url: req.url!, headers: req.headers });
      const what = cases.get(/\/blobs\/([0-9a-f]{64})\//.exec(req.url!)?.[1] ?? "");
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ""));
      // "norange" ignores the Range header and sends the whole blob, as a plain file server might.
      const ranged = range && what !== "norange";
      const whole = what === "other" ? other : blob;
      const bytes = ranged ? whole.subarray(Number(range[1]), range[2] ? Number(range[2]) + 1 : undefined) : whole;
      if (what === "missing") {
        res.writeHead(404, { "content-type": "application/json" });
        return res.end(JSON.stringify({ error: { code: 404, message: "no such blob here", status: "NOT_FOUND" } }));
      }
      if (what === "chunked") {
        res.writeHead(200);
        res.write(bytes.subarray(0, MiB));
        return res.end(bytes.subarray(MiB));
      }
      res.writeHead(ranged ? 206 : 200, { "content-length": bytes.byteLength });
      if (what === "short") {
        // Cut where a ReadResponse ends: the bridge must count bytes, not just finish messages.
        res.write(bytes.subarray(0, MiB));
        return void setTimeout(() => res.socket?.end(), 20);
      }
      if (what === "slow") {
        // A MiB, then nothing until the client gives up: the bridge must hang up on the worker.
        slowClosed = new Promise((resolve) => res.on("close", () => resolve()));
        return void res.write(bytes.subarray(0, MiB));
      }
      if (what === "other") {
        // In pieces of 300 KiB: reads the bridge keeps (not copies), several per megabyte it
        // writes before it waits for the client.
        let at = 0;
        const next = () => {
          res.write(bytes.subarray(at, (at += 300 * 1024)));
          if (at < bytes.byteLength) setTimeout(next, 1);
          else res.end();
        };
        return next();
      }
      res.end(bytes);
    });
    await new Promise<void>((resolve) => worker.listen(0, "127.0.0.1", resolve));
    bridge = await startBridge({ upstream: `http://127.0.0.1:${(worker.address() as AddressInfo).port}`, port: 0, log: () => {} });
    c = clients(`127.0.0.1:${bridge.port}`);
  });
  afterAll(async () => {
    for (const client of Object.values(c ?? {})) client.close();
    await bridge?.close();
    worker?.close();
  });

  const name = (what: string) => `main/blobs/${hashFor(what)}/${blob.byteLength}`;

  it("reads the bytes whole and in ranges, with the call's credentials, on a connection of its own", async () => {
    seen.length = 0;
    expect(await read(c.bs, name("whole"), 0, 0, metadata("k1"))).toMatchObject({ hash: sha256(blob), size: blob.byteLength, messages: 4 });
    const from = MiB + 5;
    expect(await read(c.bs, name("whole"), from, 2 * MiB)).toMatchObject({ hash: sha256(blob.subarray(from, from + 2 * MiB)), size: 2 * MiB });
    expect(seen.map((s) => [s.url, s.headers.range, s.headers.authorization, s.headers.connection])).toEqual([
      [`/${name("whole")}`, undefined, "Bearer k1", "close"],
      [`/${name("whole")}`, `bytes=${from}-${from + 2 * MiB - 1}`, undefined, "close"],
    ]);
  });

  it("many reads at once, some of them slow, each get their own bytes", async () => {
    // The bridge reads each GET into buffers it reuses for later reads once their bytes went out
    // to the client (fixed-length-get.ts recycle): one reused while still queued for a slow
    // client would carry another read's bytes.
    const slowRead = (what: string, pauseMs: number) =>
      new Promise<string>((resolve, reject) => {
        const h = createHash("sha256");
        const call = c.bs.Read({ resource_name: name(what) }, metadata());
        call.on("data", (m: { data: Uint8Array }) => {
          h.update(m.data);
          if (!pauseMs) return;
          call.pause();
          setTimeout(() => call.resume(), pauseMs);
        });
        call.on("error", reject);
        call.on("end", () => resolve(h.digest("hex")));
      });
    for (let round = 0; round < 3; round++) {
      const whats = Array.from({ length: 8 }, (_, i) => (i % 2 ? "other" : "whole"));
      const hashes = await Promise.all(whats.map((w, i) => slowRead(w, i % 3 === 0 ? 10 : 0)));
      expect(hashes).toEqual(whats.map((w) => sha256(w === "other" ? other : blob)));
    }
  });

  it("a body that ends short is UNAVAILABLE, after the whole messages that did arrive", async () => {
    const got = await new Promise<{ size: number; err: grpc.ServiceError }>((resolve) => {
      let size = 0;
      const call = c.bs.Read({ resource_name: name("short") }, metadata());
      call.on("data", (m: { data: Uint8Array }) => (size += m.data.byteLength));
      call.on("error", (err: grpc.ServiceError) => resolve({ size, err }));
      call.on("end", () => resolve({ size, err: undefined as never }));
    });
    expect(grpc.status[got.err.code]).toBe("UNAVAILABLE");
    expect(got.err.details).toMatch(/bytes short|broke off/);
    expect(got.size).toBeLessThanOrEqual(MiB);
  });

  it("a body of another length than the read asked for (a Range ignored) is UNAVAILABLE, not passed on", async () => {
    const err = await read(c.bs, name("norange"), MiB, MiB).catch((e: grpc.ServiceError) => e);
    expect(grpc.status[(err as grpc.ServiceError).code]).toBe("UNAVAILABLE");
    expect((err as grpc.ServiceError).details).toMatch(new RegExp(`answered ${blob.byteLength} bytes where the read asked for ${MiB}`));
  });

  it("an answer that is not a fixed-length blob is asked again through node:http: chunked bytes, a JSON error", async () => {
    seen.length = 0;
    expect(await read(c.bs, name("chunked"))).toMatchObject({ hash: sha256(blob), size: blob.byteLength });
    const err = await read(c.bs, name("missing")).catch((e: grpc.ServiceError) => e);
    expect([grpc.status[(err as grpc.ServiceError).code], (err as grpc.ServiceError).details]).toEqual(["NOT_FOUND", "no such blob here"]);
    // Each: the direct GET (Connection: close), then node:http's (kept alive).
    expect(seen.map((s) => [s.url, s.headers.connection])).toEqual([
      [`/${name("chunked")}`, "close"],
      [`/${name("chunked")}`, "keep-alive"],
      [`/${name("missing")}`, "close"],
      [`/${name("missing")}`, "keep-alive"],
    ]);
  });

  it("a client that cancels mid-read closes the worker's connection", async () => {
    slowClosed = undefined;
    const call = c.bs.Read({ resource_name: name("slow") }, metadata());
    call.on("error", () => {});
    await once(call, "data");
    call.cancel();
    expect(slowClosed).toBeDefined();
    await slowClosed;
  });
});
