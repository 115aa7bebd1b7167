// Small ByteStream Writes through the bridge go to the worker in shared BatchUpdateBlobs calls
// (cli/small-write-batcher.ts). Many at once, from real grpc-js clients: each Write gets its own
// blob's answer (a wrong one fails alone, duplicates both succeed, one closed early or cancelled
// breaks nobody), Writes under different keys never share a call, and the worker sees fewer
// requests than there were Writes.
import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auth, codeOf, connect, digestOf, errorOf, grpc, sha256, unary, writeSmall, type Clients, type Digest, type SmallWrite } from "./grpc-client.ts";
import { startStack, type Stack } from "./stack.ts";

const uploadName = (instance: string, blob: Uint8Array, hash = sha256(blob)) =>
  `${instance ? `${instance}/` : ""}uploads/${randomUUID()}/blobs/${hash}/${blob.byteLength}`;

/** The digests FindMissingBlobs says `instance` (under `md`'s key) lacks. */
async function missing(cas: Clients["cas"], instance: string, digests: Digest[], md = new grpc.Metadata()): Promise<string[]> {
  const res = await unary(cas, "FindMissingBlobs", { instance_name: instance, blob_digests: digests }, md);
  return res.missing_blob_digests.map((d: Digest) => d.hash);
}

/** Requests the worker has answered so far, from its /metrics (one workerd isolate locally). */
async function workerRequests(stack: Stack): Promise<number> {
  const text = await (await fetch(`${stack.httpUrl}/metrics`)).text();
  return [...text.matchAll(/^kiln_requests_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

describe("small Writes through the bridge, open stack", () => {
  let stack: Stack;
  let c: Clients;

  beforeAll(async () => {
    stack = await startStack();
    c = connect(stack.grpcTarget);
  });
  afterAll(async () => {
    c?.close();
    await stack?.stop();
  });

  it("each of many concurrent Writes gets its own answer, in fewer worker requests than Writes", async () => {
    const blobs = Array.from({ length: 40 }, (_, i) => randomBytes(1024 + i));
    const wrong = randomBytes(1000);
    const wrongHash = sha256(randomBytes(1000));
    const closed = randomBytes(900);
    const cancelled = randomBytes(800);
    const before = await workerRequests(stack);

    // Everything at once: 40 blobs, 8 of them written twice, one whose bytes are not its digest's,
    // one closed before finish_write and one cancelled as soon as it is sent.
    const writes = [...blobs, ...blobs.slice(0, 8)].map((b) => writeSmall(c.bytestream, uploadName("", b), b));
    const bad = writeSmall(c.bytestream, uploadName("", wrong, wrongHash), wrong);
    const early = writeSmall(c.bytestream, uploadName("", closed), closed, new grpc.Metadata(), false);
    const gone = writeSmall(c.bytestream, uploadName("", cancelled), cancelled);
    gone.call.cancel();

    expect(await Promise.all(writes.map((w) => w.response.then((r) => r.committed_size)))).toEqual([...blobs, ...blobs.slice(0, 8)].map((b) => String(b.byteLength)));
    const err = await errorOf(bad.response);
    expect(grpc.status[err.code]).toBe("INVALID_ARGUMENT");
    expect(err.details).toContain(wrongHash);
    expect((await early.response).committed_size).toBe("0");
    expect(await codeOf(gone.response)).toBe("CANCELLED");

    const requests = (await workerRequests(stack)) - before;
    const calls = writes.length + 3;
    // Without batching each Write is at least one request (the early-closed one asks QueryWriteStatus).
    expect(requests, `${requests} worker requests for ${calls} Writes`).toBeLessThan(calls / 2);

    // Stored and readable, byte for byte; the wrong one and the unfinished one are not stored.
    const read = await unary(c.cas, "BatchReadBlobs", { instance_name: "", digests: blobs.map(digestOf) });
    expect(read.responses.map((r: { status: { code: number }; data: Buffer }) => [r.status.code, sha256(r.data)])).toEqual(blobs.map((b) => [0, sha256(b)]));
    expect(await missing(c.cas, "", [{ hash: wrongHash, size_bytes: "1000" }, digestOf(wrong), digestOf(closed)])).toEqual([wrongHash, sha256(wrong), sha256(closed)]);
  });

  it("a lone small Write is answered without waiting for company, and the empty blob too", async () => {
    const blob = randomBytes(64 * 1024);
    expect((await writeSmall(c.bytestream, uploadName("solo", blob), blob).response).committed_size).toBe(String(64 * 1024));
    expect(await missing(c.cas, "solo", [digestOf(blob)])).toEqual([]);
    const empty = new Uint8Array(0);
    expect((await writeSmall(c.bytestream, uploadName("", empty), empty).response).committed_size).toBe("0");
  });
});

describe("small Writes through the bridge under several API keys at once", () => {
  const A = "batch-test-key-acme-0123456789abcdef";
  const B = "batch-test-key-globex-0123456789abcd";
  const R = "batch-test-key-acme-read-0123456789ab";
  let stack: Stack;
  let c: Clients;

  beforeAll(async () => {
    // Tenants keep separate CASes: a blob sent under the wrong key would land in the wrong one.
    stack = await startStack({
      vars: {
        API_KEYS: JSON.stringify([
          { key: A, name: "acme", tenant: "acme", instances: ["alpha"], access: "read-write" },
          { key: B, name: "globex", tenant: "globex", instances: ["beta"], access: "read-write" },
          { key: R, name: "acme-read", tenant: "acme", instances: ["alpha"], access: "read" },
        ]),
      },
    });
    c = connect(stack.grpcTarget);
  });
  afterAll(async () => {
    c?.close();
    await stack?.stop();
  });

  it("each key's Writes go under that key only; a key without write access fails only its own", async () => {
    const make = (n: number) => Array.from({ length: n }, () => randomBytes(1024));
    const aBlobs = make(12);
    const bBlobs = make(12);
    const bToAlpha = make(4);
    const rToAlpha = make(4);
    const none = make(2);
    // Interleaved, so that any batch could have taken blobs of several keys.
    const started: { blob: Uint8Array; w: SmallWrite; who: string }[] = [];
    for (let i = 0; i < 12; i++) {
      started.push({ blob: aBlobs[i]!, who: "A", w: writeSmall(c.bytestream, uploadName("alpha", aBlobs[i]!), aBlobs[i]!, auth(A)) });
      started.push({ blob: bBlobs[i]!, who: "B", w: writeSmall(c.bytestream, uploadName("beta", bBlobs[i]!), bBlobs[i]!, auth(B)) });
      if (i < 4) {
        started.push({ blob: bToAlpha[i]!, who: "B in alpha", w: writeSmall(c.bytestream, uploadName("alpha", bToAlpha[i]!), bToAlpha[i]!, auth(B)) });
        started.push({ blob: rToAlpha[i]!, who: "R", w: writeSmall(c.bytestream, uploadName("alpha", rToAlpha[i]!), rToAlpha[i]!, auth(R)) });
      }
      if (i < 2) started.push({ blob: none[i]!, who: "nobody", w: writeSmall(c.bytestream, uploadName("alpha", none[i]!), none[i]!) });
    }
    const outcome = await Promise.all(started.map(async (s) => `${s.who}: ${await codeOf(s.w.response)}`));
    const expected: Record<string, string> = { A: "OK", B: "OK", "B in alpha": "PERMISSION_DENIED", R: "PERMISSION_DENIED", nobody: "UNAUTHENTICATED" };
    expect(outcome).toEqual(started.map((s) => `${s.who}: ${expected[s.who]}`));

    const all = [...aBlobs, ...bBlobs, ...bToAlpha, ...rToAlpha, ...none];
    const absent = (except: Uint8Array[]) => all.filter((b) => !except.includes(b)).map(sha256);
    expect((await missing(c.cas, "alpha", all.map(digestOf), auth(A))).sort()).toEqual(absent(aBlobs).sort());
    expect((await missing(c.cas, "beta", all.map(digestOf), auth(B))).sort()).toEqual(absent(bBlobs).sort());
  });
});

describe("small Writes through the bridge to a worker with a small max_batch_total_size_bytes", () => {
  let stack: Stack;
  let c: Clients;

  beforeAll(async () => {
    // Below what one batch of the bridge carries (16 blobs or 1 MiB): its batches must be split.
    stack = await startStack({ vars: { MAX_BATCH_TOTAL_SIZE_BYTES: "150000" } });
    c = connect(stack.grpcTarget);
  });
  afterAll(async () => {
    c?.close();
    await stack?.stop();
  });

  it("goes as several calls that each fit, and every Write succeeds", async () => {
    const blobs = Array.from({ length: 24 }, () => randomBytes(60 * 1024));
    const before = await workerRequests(stack);
    const writes = blobs.map((b) => writeSmall(c.bytestream, uploadName("small-batches", b), b));
    expect(await Promise.all(writes.map((w) => codeOf(w.response)))).toEqual(blobs.map(() => "OK"));
    expect(await missing(c.cas, "small-batches", blobs.map(digestOf))).toEqual([]);
    // At most two 60 KiB blobs fit in a call: at least 12 BatchUpdateBlobs, each refused whole were it larger.
    expect((await workerRequests(stack)) - before).toBeGreaterThanOrEqual(12);
  });
});
