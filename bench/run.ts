// Kiln benchmarks (`npm run bench`): not a test. Every number is printed with its ratio against a
// limit measured in the same run on the same machine:
//   - bare R2 put/get through a trivial worker (bench/bare-r2) in the same local runtime;
//   - node:crypto SHA-256 speed;
//   - an empty FindMissingBlobs round trip (the transport, without the index).
// Sizes can be shrunk for a quick look: BENCH_BIG_MIB, BENCH_PASSES (uploads), BENCH_ROUNDS
// (downloads and 1 KiB blobs, 7), BENCH_SMALL_SCALE (0..1], BENCH_CHUNK_MIB (the SplitBlob/SpliceBlob
// blob, 1024).
import { createHash, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { ContentAddressableStorage } from "../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { startBridge } from "../cli/bridge.ts";
import { startStack } from "../test/e2e/stack.ts";
import { benchChunking } from "./chunking.ts";
import { bigBlob, KiB, MiB, nobleSha256Speed, sha256Speed, smallBlobs, type BigBlob, type SmallBlob } from "./lib/data.ts";
import { bsRead, bsWrite, clientCodecMs, connect, memoryReadServer, unary, type Digest } from "./lib/grpc.ts";
import { startMemoryOrigin } from "./lib/memory-origin.ts";
import { interleave, median, pairedRatios, type Subject } from "./lib/rounds.ts";
import { grpcWebRead } from "./lib/grpc-web-read.ts";
import { grpcRead, grpcSession, grpcWrite } from "./lib/grpc-h2.ts";
import { agent, get, put } from "./lib/http.ts";
import { cpuDelta, cpuSnap, startBareR2, type BareWorker } from "./lib/procs.ts";
import { fmt, now, percentile, pool, table, type Row } from "./lib/stats.ts";
import { zstdBench } from "./lib/zstd.ts";

const envNum = (name: string, dflt: number) => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : dflt;
};

const BIG = envNum("BENCH_BIG_MIB", 256) * MiB;
const UPLOAD_PASSES = envNum("BENCH_PASSES", 5);
const DOWNLOAD_ROUNDS = envNum("BENCH_ROUNDS", 7);
/** The round number of a download's untimed pass that checks what it reads. */
const CHECK_ROUND = -1;
const SCALE = Math.min(1, envNum("BENCH_SMALL_SCALE", 1));
const SHA_BYTES = 512 * MiB;
const SMALL = KiB;
const SMALL_CONCURRENCY = 16;
const BS_SMALL_COUNT = Math.round(2_000 * SCALE);
const BARE_SMALL_COUNT = BS_SMALL_COUNT;
const BATCH_SIZE = 1_000;
const BATCH_BLOBS = Math.round(20_000 * SCALE);
const BATCH_COUNT = Math.ceil(BATCH_BLOBS / BATCH_SIZE);
const BATCH_CONCURRENCY = 2;
const FMB_DIGESTS = 10_000;
const FMB_CALLS = 30;
const INSTANCE = "bench";

const repo = fileURLToPath(new URL("../", import.meta.url));
const mb = (bytes: number) => bytes / 1e6; // MB = 10^6 bytes throughout
const log = (s: string) => process.stderr.write(`[bench ${((now() - t0) / 1000).toFixed(1).padStart(5)}s] ${s}\n`);
const t0 = now();
const loadStart = os.loadavg()[0]!;

// ---- cleanup: every process and temp dir we made, also on error and on Ctrl-C ----

const cleanups: (() => Promise<void> | void)[] = [];
let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch (e) {
      process.stderr.write(`cleanup: ${String(e)}\n`);
    }
  }
}
for (const ev of ["uncaughtException", "unhandledRejection"] as const) {
  process.on(ev, (e: unknown) => {
    process.stderr.write(`bench failed (${ev}): ${(e as Error)?.stack ?? String(e)}\n`);
    void cleanup().finally(() => process.exit(1));
  });
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    process.stderr.write(`\n${sig}: cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---- measuring ----

interface Timed {
  seconds: number;
  cpu: { self: number; workerd: number; other: number };
}

async function timed(fn: () => Promise<unknown>): Promise<Timed> {
  const c0 = cpuSnap();
  const s = now();
  await fn();
  const seconds = (now() - s) / 1000;
  return { seconds, cpu: cpuDelta(c0, cpuSnap()) };
}

interface Passes {
  best: number; // the best rate over the passes
  all: number[];
  cpuSelf: number; // mean CPU seconds per pass
  cpuWorkerd: number;
}

const TRANSIENT = /restarted mid-request|Network connection lost|UNAVAILABLE|ECONNRESET|socket hang up/i;
const retries: string[] = [];

/**
 * One timed pass. wrangler dev reloads a worker when files it watches change (other work in the
 * checkout): a pass cut by that is run again, once, and said so.
 */
async function onePass(pass: () => Promise<unknown>, what: string): Promise<Timed> {
  return timed(pass).catch((e) => {
    if (!TRANSIENT.test(String((e as Error)?.message ?? e))) throw e;
    retries.push(String((e as Error).message).slice(0, 160));
    log(`${what} cut by a worker restart, running it again: ${String((e as Error).message).slice(0, 160)}`);
    return timed(pass);
  });
}

function summarize(timings: Timed[], rate: (seconds: number) => number): Passes {
  const all = timings.map((t) => rate(t.seconds));
  const mean = (f: (t: Timed) => number) => timings.reduce((a, t) => a + f(t), 0) / timings.length;
  return { best: Math.max(...all), all, cpuSelf: mean((t) => t.cpu.self), cpuWorkerd: mean((t) => t.cpu.workerd) };
}

const cpuCol = (p: { cpuSelf: number; cpuWorkerd: number }) => `${p.cpuSelf.toFixed(2)} | ${p.cpuWorkerd.toFixed(2)}`;
const ratio = (v: number, limit: number) => `${(v / limit).toFixed(2)}x`;
const passList = (p: Passes) => p.all.map((x) => fmt(x)).join(", ");

const smallDigest = (b: SmallBlob): Digest => ({ hash: b.hash, size_bytes: String(b.data.byteLength) });

function hashCheck(expected: string) {
  const h = createHash("sha256");
  let n = 0;
  return {
    update: (c: Buffer) => {
      h.update(c);
      n += c.byteLength;
    },
    check(what: string, size: number) {
      const got = h.digest("hex");
      if (got !== expected || n !== size) throw new Error(`${what}: read back ${n} bytes hashing to ${got}, expected ${size} bytes ${expected}`);
    },
  };
}

/**
 * One download of `b`; with `verify`, also hashes what arrives and checks it (each read's untimed
 * pass before the timed rounds does, so a surface cannot be fast by being wrong; the timed passes
 * count bytes).
 */
async function download(what: string, b: BigBlob, verify: boolean, read: (onChunk?: (c: Buffer) => void) => Promise<number>) {
  const check = verify ? hashCheck(b.hash) : undefined;
  const n = await read(check?.update);
  if (check) check.check(what, b.size);
  else if (n !== b.size) throw new Error(`${what}: read ${n} bytes of ${b.size}`);
}

// ---- the run ----

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-"));
  cleanups.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
  cleanups.push(() => fs.rmSync(path.join(repo, "bench/bare-r2/.wrangler"), { recursive: true, force: true }));
  const rows: Row[] = [];
  const notes: string[] = [];

  // 1b. SHA-256 speed of this machine.
  log(`SHA-256 over ${SHA_BYTES / MiB} MiB`);
  const sha = sha256Speed(SHA_BYTES);
  rows.push({ metric: "limit: SHA-256 (node:crypto, 1 MiB chunks)", value: `${fmt(sha.mbps)} MB/s`, limit: "-", ratio: "-" });
  const noble = await nobleSha256Speed(SHA_BYTES / 4);
  rows.push({
    metric: "limit: SHA-256 in JS (@noble/hashes on V8)",
    value: `${fmt(noble.mbps)} MB/s`,
    limit: `node:crypto ${fmt(sha.mbps)} MB/s`,
    ratio: ratio(noble.mbps, sha.mbps),
  });

  // Data, prepared (and hashed) outside every timed region.
  log(`preparing ${5 * UPLOAD_PASSES} blobs of ${BIG / MiB} MiB (hashing)`);
  const run = randomBytes(6).toString("hex"); // fresh content per run: nothing is deduplicated by an earlier run
  const big = (what: string) => Array.from({ length: UPLOAD_PASSES }, (_, i) => bigBlob(`${run}-${what}-${i}`, BIG));
  const bareBig = big("bare");
  const bareShaBig = big("bare-sha");
  const bsBig = big("bytestream");
  const bsLightBig = big("bytestream-h2");
  const httpBig = big("http");
  const bareSmall = smallBlobs(`${run}-bare-small`, BARE_SMALL_COUNT, SMALL);
  const bsSmall = smallBlobs(`${run}-bs-small`, BS_SMALL_COUNT, SMALL);
  const httpSmall = smallBlobs(`${run}-http-small`, BS_SMALL_COUNT, SMALL);
  const batchSmall = smallBlobs(`${run}-batch-small`, BATCH_BLOBS, SMALL);

  // 1a. The bare R2 worker, and the stack.
  log("starting bench/bare-r2 (wrangler dev)");
  const bare: BareWorker = await startBareR2(fs.mkdtempSync(path.join(tmp, "bare-")));
  cleanups.push(() => bare.stop());
  log("starting the Kiln stack (wrangler dev + gRPC bridge)");
  const stack = await startStack();
  cleanups.push(() => stack.stop());
  log(`stack up: ${stack.httpUrl}, gRPC ${stack.grpcTarget}, worker pids ${stack.workerPids().join(",")}`);
  const clients = connect(stack.grpcTarget);
  cleanups.push(() => clients.close());
  // A gRPC client as light as the bare rows' node:http (bench/lib/grpc-h2.ts), with a 1 MiB window.
  const light = grpcSession(stack.grpcTarget, MiB);
  cleanups.push(() => void light.close());
  const bigAgent = agent(4);
  const smallAgent = agent(SMALL_CONCURRENCY);
  cleanups.push(() => {
    bigAgent.destroy();
    smallAgent.destroy();
  });

  // Warm-up: first requests compile, open sockets and create the index objects.
  log("warming up");
  const warm = smallBlobs(`${run}-warm`, 64, SMALL);
  await pool(warm.slice(0, 16), 16, (b) => put(`${bare.url}/warm/${b.hash}`, SMALL, [b.data], smallAgent));
  await get(`${bare.url}/warm/${warm[0]!.hash}`, smallAgent);
  await pool(warm.slice(16, 32), 16, (b) =>
    bsWrite(clients.bytestream, `${INSTANCE}/uploads/${randomUUID()}/blobs/${b.hash}/${SMALL}`, [b.data]),
  );
  await bsRead(clients.bytestream, `${INSTANCE}/blobs/${warm[16]!.hash}/${SMALL}`);
  await pool(warm.slice(32, 48), 16, (b) => put(`${stack.httpUrl}/cache/${INSTANCE}/cas/${b.hash}`, SMALL, [b.data], smallAgent));
  await get(`${stack.httpUrl}/cache/${INSTANCE}/cas/${warm[32]!.hash}`, smallAgent);
  await unary(clients.cas, "BatchUpdateBlobs", {
    instance_name: INSTANCE,
    requests: warm.slice(48).map((b) => ({ digest: smallDigest(b), data: b.data })),
  });
  await unary(clients.cas, "FindMissingBlobs", { instance_name: INSTANCE, blob_digests: warm.map(smallDigest) });

  // 2. Large blobs. Each upload pass stores a different blob (the CAS deduplicates).
  const bigRate = (s: number) => mb(BIG) / s;
  const label = `${BIG / MiB} MiB`;

  // Uploads, in interleaved rounds like the downloads below: each round puts a new blob into bare R2
  // (without and with R2's SHA-256 check) and uploads one through each surface (the CAS
  // deduplicates, so every pass stores a blob of its own).
  const BS = "ByteStream (gRPC via bridge)";
  const HTTP = "HTTP /cache/.../cas";
  const BARE_PUT = `limit: bare R2 put ${label} (worker, HTTP)`;
  const uploads: { name: string; blobs: BigBlob[]; up: (b: BigBlob, i: number) => Promise<unknown> }[] = [
    { name: BARE_PUT, blobs: bareBig, up: (b, i) => put(`${bare.url}/big/${i}`, BIG, b.chunks(), bigAgent) },
    { name: `limit: bare R2 put ${label}, R2 checks SHA-256`, blobs: bareShaBig, up: (b, i) => put(`${bare.url}/big-sha/${i}?sha256=${b.hash}`, BIG, b.chunks(), bigAgent) },
    {
      name: `${BS} upload ${label}`,
      blobs: bsBig,
      up: async (b) => {
        const res = await bsWrite(clients.bytestream, `${INSTANCE}/uploads/${randomUUID()}/blobs/${b.hash}/${b.size}`, b.chunks());
        if (Number(res.committed_size) !== b.size) throw new Error(`Write committed ${res.committed_size} of ${b.size}`);
      },
    },
    {
      name: `${BS}, node:http2 client, upload ${label}`,
      blobs: bsLightBig,
      up: async (b) => {
        const committed = await grpcWrite(light, `${INSTANCE}/uploads/${randomUUID()}/blobs/${b.hash}/${b.size}`, b.chunks());
        if (committed !== b.size) throw new Error(`Write committed ${committed} of ${b.size}`);
      },
    },
    { name: `${HTTP} upload ${label}`, blobs: httpBig, up: (b) => put(`${stack.httpUrl}/cache/${INSTANCE}/cas/${b.hash}`, b.size, b.chunks(), bigAgent) },
  ];
  log(`uploads: ${UPLOAD_PASSES} rounds of ${uploads.length} uploads of ${label} (bare R2, bare R2 with SHA-256, ByteStream with two clients, HTTP)`);
  const ups = await interleave(
    uploads.map((u) => ({ name: u.name, pass: (r: number) => u.up(u.blobs[r]!, r) })),
    UPLOAD_PASSES,
    (u, r) => onePass(() => u.pass(r), `${u.name}, round ${r + 1}`),
  );
  // Every blob uploaded into Kiln is checked through the fast plain-HTTP read of the same CAS, untimed.
  for (const u of uploads.slice(2)) {
    for (const [i, b] of u.blobs.entries()) {
      await download(`${u.name} pass ${i + 1}, read back over HTTP`, b, true, (onChunk) => get(`${stack.httpUrl}/cache/${INSTANCE}/cas/${b.hash}`, bigAgent, onChunk));
    }
  }
  const barePut = summarize(ups.get(BARE_PUT)!, bigRate);
  for (const u of uploads) {
    const d = summarize(ups.get(u.name)!, bigRate);
    if (u.name === BARE_PUT) {
      rows.push({ metric: u.name, value: `${fmt(d.best)} MB/s`, limit: "-", ratio: "-", cpu: cpuCol(d) });
      notes.push(`${u.name}: passes ${passList(d)} MB/s`);
      continue;
    }
    const paired = pairedRatios(d.all, barePut.all);
    rows.push({ metric: u.name, value: `${fmt(d.best)} MB/s`, limit: `bare put ${fmt(barePut.best)} MB/s`, ratio: ratio(median(paired), 1), cpu: cpuCol(d) });
    notes.push(`${u.name}: passes ${passList(d)} MB/s; by round / bare put ${paired.map((x) => x.toFixed(2)).join(", ")}; best / best ${ratio(d.best, barePut.best)}`);
  }
  type Down = (b: BigBlob, onChunk?: (c: Buffer) => void) => Promise<number>;

  // Downloads, in interleaved rounds (bench/lib/rounds.ts): each round reads once from bare R2 and
  // once through every surface, each surface reading the blob uploaded over HTTP and the one
  // uploaded over ByteStream. With the default RESUMABLE_UPLOAD_ABOVE_BYTES (1 GiB) both are one
  // verified put; a worker set to a lower threshold stores the ByteStream upload multipart, which
  // changes its read speed. An untimed pass of each read first hashes and checks what it returns.
  const SINGLE = "uploaded over HTTP";
  const MULTI = "uploaded over ByteStream";
  const wide = connect(stack.grpcTarget, MiB); // grpc-java's (Bazel's) 1 MiB window, not grpc-js's 64 KiB
  const memory = await memoryReadServer(BIG);
  const fromMemory = [connect(memory.target), connect(memory.target, MiB)];
  // The bridge in front of a plain in-memory HTTP origin instead of the worker: the bridge hop's own
  // ceiling here, with the same client and the bridge on the same thread as in the rows above.
  const origin = await startMemoryOrigin(BIG);
  const originBridge = await startBridge({ upstream: origin.url, port: 0, log: () => {} });
  const overOrigin = connect(`127.0.0.1:${originBridge.port}`, MiB);
  cleanups.push(async () => {
    wide.close();
    for (const c of fromMemory) c.close();
    memory.close();
    overOrigin.close();
    await originBridge.close();
    origin.stop();
  });
  const bsDown = (c: typeof wide): Down => (b, onChunk) => bsRead(c.bytestream, `${INSTANCE}/blobs/${b.hash}/${b.size}`, onChunk);
  const httpDown: Down = (b, onChunk) => get(`${stack.httpUrl}/cache/${INSTANCE}/cas/${b.hash}`, bigAgent, onChunk);
  // ByteStream.Read as gRPC-web straight to the worker: what Cloudflare's edge sends a deployed
  // worker for a native gRPC client, and what browser tools send. No bridge in between; connect-node
  // as the client here, a node:http frame reader below.
  const gwBytestream = createClient(ByteStream, createGrpcWebTransport({ baseUrl: stack.httpUrl, httpVersion: "1.1" }));
  const gwDown: Down = async (b, onChunk) => {
    let n = 0;
    for await (const r of gwBytestream.read({ resourceName: `${INSTANCE}/blobs/${b.hash}/${b.size}` })) {
      n += r.data.byteLength;
      onChunk?.(Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength));
    }
    return n;
  };
  const reading = (name: string, b: BigBlob, down: Down): Subject => ({ name, pass: (r) => download(name, b, r === CHECK_ROUND, (onChunk) => down(b, onChunk)) });
  const BARE_GET = `limit: bare R2 get ${label} (worker, HTTP)`;
  const limitName = (w: string) => `limit: grpc-js client ByteStream.Read ${label} from memory, ${w} window`;
  const readSubjects: Subject[] = [
    reading(BARE_GET, bareBig[0]!, (_b, onChunk) => get(`${bare.url}/big/0`, bigAgent, onChunk)),
    // Read as Bazel reads: grpc-java's 1 MiB window. grpc-js's own 64 KiB default in the row after.
    reading(`${BS} download ${label}, ${SINGLE}`, httpBig[0]!, bsDown(wide)),
    reading(`${BS} download ${label}, ${MULTI}`, bsBig[0]!, bsDown(wide)),
    reading(`${BS}, grpc-js's 64 KiB window, download ${label}, ${SINGLE}`, httpBig[0]!, bsDown(clients)),
    // The same read with a gRPC client as light as the bare get's: what Kiln's path (bridge and worker) costs.
    reading(`${BS}, node:http2 client, download ${label}, ${SINGLE}`, httpBig[0]!, (b, onChunk) => grpcRead(light, `${INSTANCE}/blobs/${b.hash}/${b.size}`, onChunk)),
    reading(`ByteStream (gRPC-web direct to the worker) download ${label}, ${SINGLE}`, httpBig[0]!, gwDown),
    // The same read with a client as light as the bare get's: what the worker's path costs.
    reading(`ByteStream (gRPC-web direct, node:http client) download ${label}, ${SINGLE}`, httpBig[0]!, (b, onChunk) =>
      grpcWebRead(stack.httpUrl, `${INSTANCE}/blobs/${b.hash}/${b.size}`, bigAgent, onChunk),
    ),
    // What the bench's gRPC client itself can take in, from a server in this process (no Kiln at all).
    ...fromMemory.map((c, i) => ({
      name: limitName(i ? "1 MiB" : "64 KiB"),
      pass: async () => {
        const n = await bsRead(c.bytestream, "limit/blobs/x/1");
        if (n !== BIG) throw new Error(`the grpc-js limit read ${n} of ${BIG} bytes`);
      },
    })),
    {
      name: `limit: the bridge alone, ByteStream.Read ${label} from an in-memory HTTP origin (no worker), 1 MiB window`,
      pass: async () => {
        const n = await bsRead(overOrigin.bytestream, `limit/blobs/${"0".repeat(64)}/${BIG}`);
        if (n !== BIG) throw new Error(`the bridge limit read ${n} of ${BIG} bytes`);
      },
    },
    reading(`${HTTP} download ${label}, ${SINGLE}`, httpBig[0]!, httpDown),
    reading(`${HTTP} download ${label}, ${MULTI}`, bsBig[0]!, httpDown),
  ];
  // Each read once first, untimed, hashing and checking what it returns (and warming its path):
  // hashing in the timed rounds would load this process's thread, which the bridge's rows share
  // and the bare get's does not.
  log(`downloads: checking what each of ${readSubjects.length} reads of ${label} returns (untimed)`);
  for (const s of readSubjects) await s.pass(CHECK_ROUND);
  log(`downloads: ${DOWNLOAD_ROUNDS} rounds of ${readSubjects.length} reads of ${label} (bare R2, ByteStream, grpc-js and bridge limits, HTTP)`);
  const reads = await interleave(readSubjects, DOWNLOAD_ROUNDS, (s, r) => onePass(() => s.pass(r), `${s.name}, round ${r + 1}`));
  const bareGet = summarize(reads.get(BARE_GET)!, bigRate);
  for (const s of readSubjects) {
    const d = summarize(reads.get(s.name)!, bigRate);
    if (s.name === BARE_GET) {
      rows.push({ metric: s.name, value: `${fmt(d.best)} MB/s`, limit: "-", ratio: "-", cpu: cpuCol(d) });
      notes.push(`bare R2 get: passes ${passList(d)} MB/s`);
      continue;
    }
    const paired = pairedRatios(d.all, bareGet.all);
    const limitPass = s.name.startsWith("limit:");
    rows.push({ metric: s.name, value: `${fmt(d.best)} MB/s`, limit: `bare get ${fmt(bareGet.best)} MB/s`, ratio: ratio(median(paired), 1), cpu: limitPass ? undefined : cpuCol(d) });
    notes.push(`${s.name}: passes ${passList(d)} MB/s; by round / bare get ${paired.map((x) => x.toFixed(2)).join(", ")}; best / best ${ratio(d.best, bareGet.best)}`);
  }
  notes.push(
    "grpc-js client limit: a grpc-js server in the bench process streams the bytes from memory to the same grpc-js client; a ByteStream " +
      "download through Kiln cannot beat it, so its ratio to bare get bounds the ByteStream download ratios",
  );
  notes.push(
    "ByteStream via bridge downloads: the client reads with a 1 MiB HTTP/2 window, grpc-java's default (Bazel's client, which grows it further), " +
      "unless the row says grpc-js's 64 KiB; the bridge runs in this process, on the client's thread",
  );
  notes.push(
    "node:http2 client: native gRPC with node:http2 and a few lines of framing (bench/lib/grpc-h2.ts), as light as the bare rows' " +
      "node:http client: its rows measure the bridge and the worker; the grpc-js rows add grpc-js's own cost (on a read it copies every message " +
      "whole, then decodes it; on a write it encodes each message, then copies it behind its frame header)",
  );
  notes.push(
    "the bridge alone: the same client and an in-process bridge reading from a plain HTTP server (its own process) that serves the bytes from memory; " +
      "the via-bridge rows cannot beat it, and with every core busy they also share the CPU with workerd",
  );
  notes.push(
    `limits for uploads: both surfaces store a blob up to RESUMABLE_UPLOAD_ABOVE_BYTES (1 GiB by default) in one verified R2 put ` +
      `(R2 hashes natively); a larger ByteStream upload is resumable, hashed in JS (~${fmt(noble.mbps)} MB/s on this V8) in 8 MiB multipart parts`,
  );

  // 2b. zstd against uncompressed, on a compressible blob (BENCH_ZSTD_MIB, 64 by default).
  const z = await zstdBench(clients.bytestream, INSTANCE, envNum("BENCH_ZSTD_MIB", 64) * MiB, UPLOAD_PASSES, log);
  rows.push(...z.rows);
  notes.push(...z.notes);

  // 3. 1 KiB blobs per second: bare R2 puts, HTTP cache PUTs and ByteStream Writes, in interleaved
  // rounds of an equal share of each list.
  const share = <T>(xs: T[], r: number) => xs.slice(Math.floor((r * xs.length) / DOWNLOAD_ROUNDS), Math.floor(((r + 1) * xs.length) / DOWNLOAD_ROUNDS));
  const BARE_SMALL = `limit: bare R2 put 1 KiB, ${SMALL_CONCURRENCY} in flight`;
  const smallSubjects: { name: string; blobs: SmallBlob[]; one: (b: SmallBlob) => Promise<unknown> }[] = [
    { name: BARE_SMALL, blobs: bareSmall, one: (b) => put(`${bare.url}/small/${b.hash}`, SMALL, [b.data], smallAgent) },
    { name: `HTTP /cache/.../cas PUT 1 KiB, ${SMALL_CONCURRENCY} in flight`, blobs: httpSmall, one: (b) => put(`${stack.httpUrl}/cache/${INSTANCE}/cas/${b.hash}`, SMALL, [b.data], smallAgent) },
    {
      name: `ByteStream.Write 1 KiB, ${SMALL_CONCURRENCY} in flight`,
      blobs: bsSmall,
      one: async (b) => {
        const res = await bsWrite(clients.bytestream, `${INSTANCE}/uploads/${randomUUID()}/blobs/${b.hash}/${SMALL}`, [b.data]);
        if (Number(res.committed_size) !== SMALL) throw new Error(`Write committed ${res.committed_size}`);
      },
    },
  ];
  log(`1 KiB blobs: ${DOWNLOAD_ROUNDS} rounds of bare R2 PUTs, HTTP cache PUTs and ByteStream Writes (${BS_SMALL_COUNT} each), concurrency ${SMALL_CONCURRENCY}`);
  // Not retried: a rerun would write blobs that already exist, which is a different (cheaper) thing.
  const smallRuns = await interleave(
    smallSubjects.map((x) => ({ name: x.name, pass: (r: number) => pool(share(x.blobs, r), SMALL_CONCURRENCY, x.one) })),
    DOWNLOAD_ROUNDS,
    (x, r) => timed(() => x.pass(r)),
  );
  const smallRates = (x: (typeof smallSubjects)[number]) => smallRuns.get(x.name)!.map((t, r) => share(x.blobs, r).length / t.seconds);
  const overall = (x: (typeof smallSubjects)[number]) => {
    const ts = smallRuns.get(x.name)!;
    const sum = (f: (t: Timed) => number) => ts.reduce((a, t) => a + f(t), 0);
    return { rate: x.blobs.length / sum((t) => t.seconds), cpu: cpuCol({ cpuSelf: sum((t) => t.cpu.self), cpuWorkerd: sum((t) => t.cpu.workerd) }) };
  };
  const bareSmallRates = smallRates(smallSubjects[0]!);
  const bareSmallRate = overall(smallSubjects[0]!).rate;
  for (const x of smallSubjects) {
    const o = overall(x);
    const paired = pairedRatios(smallRates(x), bareSmallRates);
    if (x.name === BARE_SMALL) rows.push({ metric: x.name, value: `${fmt(o.rate)} blobs/s`, limit: "-", ratio: "-", cpu: o.cpu });
    else rows.push({ metric: x.name, value: `${fmt(o.rate)} blobs/s`, limit: `bare ${fmt(bareSmallRate)} blobs/s`, ratio: ratio(median(paired), 1), cpu: o.cpu });
    notes.push(`${x.name}: by round ${smallRates(x).map((v) => fmt(v)).join(", ")} blobs/s${x.name === BARE_SMALL ? "" : `; / bare ${paired.map((v) => v.toFixed(2)).join(", ")}`}`);
  }

  log(`BatchUpdateBlobs: ${BATCH_BLOBS} blobs of 1 KiB in batches of ${BATCH_SIZE}, ${BATCH_CONCURRENCY} in flight`);
  const batches = Array.from({ length: BATCH_COUNT }, (_, i) => batchSmall.slice(i * BATCH_SIZE, (i + 1) * BATCH_SIZE));
  const batchLatencies: number[] = [];
  const batchT = await timed(() =>
    pool(batches, BATCH_CONCURRENCY, async (batch) => {
      const s = now();
      const res = await unary(clients.cas, "BatchUpdateBlobs", {
        instance_name: INSTANCE,
        requests: batch.map((b) => ({ digest: smallDigest(b), data: b.data })),
      });
      batchLatencies.push(now() - s);
      const bad = (res.responses as { status?: { code: number; message: string } }[]).filter((r) => r.status?.code);
      if (res.responses.length !== batch.length || bad.length) {
        throw new Error(`BatchUpdateBlobs: ${bad.length} failed, e.g. ${JSON.stringify(bad[0]?.status)}`);
      }
    }),
  );
  const batchRate = BATCH_BLOBS / batchT.seconds;
  rows.push({
    metric: `BatchUpdateBlobs 1 KiB, ${BATCH_SIZE}/batch, ${BATCH_CONCURRENCY} batches in flight`,
    value: `${fmt(batchRate)} blobs/s`,
    limit: `bare ${fmt(bareSmallRate)} blobs/s`,
    ratio: ratio(batchRate, bareSmallRate),
    cpu: cpuCol({ cpuSelf: batchT.cpu.self, cpuWorkerd: batchT.cpu.workerd }),
  });
  notes.push(
    `BatchUpdateBlobs of ${BATCH_SIZE}: p50 ${fmt(percentile(batchLatencies, 50))} ms, max ${fmt(Math.max(...batchLatencies))} ms per call`,
  );

  // 4. FindMissingBlobs: 10,000 digests, half present (uploaded by the batches above).
  const present = batchSmall.slice(0, FMB_DIGESTS / 2).map(smallDigest);
  if (present.length < FMB_DIGESTS / 2) throw new Error(`BENCH_SMALL_SCALE leaves only ${present.length} uploaded blobs; FindMissingBlobs needs ${FMB_DIGESTS / 2}`);
  const absent: Digest[] = Array.from({ length: FMB_DIGESTS / 2 }, () => ({ hash: randomBytes(32).toString("hex"), size_bytes: String(SMALL) }));
  const mixed = present.flatMap((d, i) => [d, absent[i]!]);
  const fmb = async (digests: Digest[], expectMissing: number) => {
    const s = now();
    const res = await unary(clients.cas, "FindMissingBlobs", { instance_name: INSTANCE, blob_digests: digests });
    const ms = now() - s;
    if (res.missing_blob_digests.length !== expectMissing) {
      throw new Error(`FindMissingBlobs reported ${res.missing_blob_digests.length} missing, expected ${expectMissing}`);
    }
    return ms;
  };
  log(`FindMissingBlobs: ${FMB_CALLS} empty calls, then ${FMB_CALLS} calls of ${FMB_DIGESTS} digests (half present)`);
  for (let i = 0; i < 3; i++) await fmb([], 0);
  const emptyMs: number[] = [];
  const emptyT = await timed(async () => {
    for (let i = 0; i < FMB_CALLS; i++) emptyMs.push(await fmb([], 0));
  });
  for (let i = 0; i < 2; i++) await fmb(mixed, absent.length);
  const fullMs: number[] = [];
  const fullT = await timed(async () => {
    for (let i = 0; i < FMB_CALLS; i++) fullMs.push(await fmb(mixed, absent.length));
  });
  const emptyP50 = percentile(emptyMs, 50);
  const p50 = percentile(fullMs, 50);
  const p99 = percentile(fullMs, 99);
  const perCall = (t: Timed) => ({ cpuSelf: t.cpu.self / FMB_CALLS, cpuWorkerd: t.cpu.workerd / FMB_CALLS });
  rows.push({
    metric: "limit: FindMissingBlobs, 0 digests (transport round trip)",
    value: `p50 ${fmt(emptyP50)} ms`,
    limit: "-",
    ratio: "-",
    cpu: cpuCol(perCall(emptyT)),
  });
  rows.push({
    metric: `FindMissingBlobs, ${FMB_DIGESTS} digests (half present) p50`,
    value: `${fmt(p50)} ms`,
    limit: `empty p50 ${fmt(emptyP50)} ms`,
    ratio: ratio(p50, emptyP50),
    cpu: cpuCol(perCall(fullT)),
  });
  rows.push({
    metric: `FindMissingBlobs, ${FMB_DIGESTS} digests (half present) p99`,
    value: `${fmt(p99)} ms`,
    limit: `empty p50 ${fmt(emptyP50)} ms`,
    ratio: ratio(p99, emptyP50),
  });
  rows.push({
    metric: "FindMissingBlobs cost per digest above transport",
    value: `${fmt(((p50 - emptyP50) * 1000) / FMB_DIGESTS, 2)} µs`,
    limit: "-",
    ratio: "-",
  });
  const codecMs = clientCodecMs("build.bazel.remote.execution.v2.ContentAddressableStorage", "FindMissingBlobs", { instance_name: INSTANCE, blob_digests: mixed }, { missing_blob_digests: absent });
  rows.push({
    metric: `FindMissingBlobs, ${FMB_DIGESTS} digests: the grpc-js client's own codec`,
    value: `${fmt(codecMs)} ms`,
    limit: `via bridge p50 ${fmt(p50)} ms`,
    ratio: `${((codecMs / p50) * 100).toFixed(0)}%`,
  });
  notes.push(`FindMissingBlobs: p99 is nearest-rank over ${FMB_CALLS} calls (the slowest but none); min ${fmt(Math.min(...fullMs))} ms, max ${fmt(Math.max(...fullMs))} ms`);
  notes.push("FindMissingBlobs client codec: encoding the request and decoding the answer in the bench's grpc-js client (@grpc/proto-loader), part of the p50 through the bridge");

  // The same calls straight to the worker as gRPC-web (connect-node, no bridge): what the bridge adds.
  log(`FindMissingBlobs direct to the worker (gRPC-web): ${FMB_CALLS} calls of ${FMB_DIGESTS} digests`);
  const direct = createClient(ContentAddressableStorage, createGrpcWebTransport({ baseUrl: stack.httpUrl, httpVersion: "1.1" }));
  const mixedEs = mixed.map((d) => ({ hash: d.hash, sizeBytes: BigInt(d.size_bytes) }));
  const directFmb = async () => {
    const s = now();
    const res = await direct.findMissingBlobs({ instanceName: INSTANCE, blobDigests: mixedEs });
    if (res.missingBlobDigests.length !== absent.length) throw new Error(`direct FindMissingBlobs reported ${res.missingBlobDigests.length} missing`);
    return now() - s;
  };
  for (let i = 0; i < 2; i++) await directFmb();
  const directMs: number[] = [];
  for (let i = 0; i < FMB_CALLS; i++) directMs.push(await directFmb());
  rows.push({
    metric: `FindMissingBlobs, ${FMB_DIGESTS} digests, direct to the worker (gRPC-web) p50`,
    value: `${fmt(percentile(directMs, 50))}, p99 ${fmt(percentile(directMs, 99))} ms`,
    limit: `via bridge p50 ${fmt(p50)} ms`,
    ratio: ratio(p50, percentile(directMs, 50)),
  });
  notes.push("FindMissingBlobs direct: ratio = through the bridge / direct (1.00x: the bridge adds nothing)");

  // 5. SplitBlob and SpliceBlob of a 1 GiB blob (bench/chunking.ts).
  const chunking = await benchChunking({ httpUrl: stack.httpUrl, cas: clients.cas, totalBytes: envNum("BENCH_CHUNK_MIB", 1024) * MiB, log });
  rows.push(...chunking.rows);
  notes.push(...chunking.notes);

  // The table (stdout); progress went to stderr.
  const wall = (now() - t0) / 1000;
  console.log(
    `\nKiln bench — ${new Date().toISOString()}, ${os.cpus().length} cores, Node ${process.version}; MB = 10^6 bytes; ` +
      `uploads, downloads and 1 KiB blobs: interleaved rounds (${UPLOAD_PASSES} of uploads, ${DOWNLOAD_ROUNDS} of the others), one pass (or share)\n` +
      `  of every subject per round in a rotating order; value = best pass, or for 1 KiB all blobs over all time;\n` +
      `  ratio = median over rounds of (pass / the same round's bare R2 pass).\n` +
      `Every download is hashed and checked once, untimed, before its timed rounds; the uploaded blobs are checked untimed too.\n` +
      `ratio otherwise: value / limit (throughput: 1.00x = as fast as bare R2; latency: how many empty round trips).\n` +
      `cpu: CPU seconds per pass (per call for FindMissingBlobs) of this process (client + in-process bridge) | all workerd processes.\n` +
      `load average (1 min) at start ${loadStart.toFixed(2)}, at end ${os.loadavg()[0]!.toFixed(2)}: other work on this machine skews every number.\n`,
  );
  console.log(table(rows));
  console.log("\n" + notes.map((n) => `- ${n}`).join("\n"));
  if (retries.length) console.log(`- ${retries.length} pass(es) rerun after a worker restart: ${retries.join("; ")}`);
  console.log(`- whole run ${wall.toFixed(0)} s`);
}

try {
  await main();
  await cleanup();
} catch (e) {
  process.stderr.write(`bench failed: ${(e as Error)?.stack ?? String(e)}\n`);
  await cleanup();
  process.exitCode = 1;
}
