// Bench of SplitBlob and SpliceBlob on a ~1 GiB blob (part of `npm run bench:cas`; alone:
// `tsx bench/chunking.ts`, which starts its own stack). Split: the worker reads the blob from R2,
// cuts it with FastCDC 2020 and stores ~2,000 chunks. Splice: the worker streams those chunks
// plus one more into a new blob of exactly 1 GiB (one verified R2 put). MB/s of blob bytes.
import { createHash, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { startStack } from "../test/e2e/stack.ts";
import { bigBlob, KiB, MiB } from "./lib/data.ts";
import { connect, grpc, unary, type Client, type Digest } from "./lib/grpc.ts";
import { agent, get, put } from "./lib/http.ts";
import { fmt, now, type Row } from "./lib/stats.ts";

const INSTANCE = "bench";
const TAIL = 64 * KiB;

/** A unary call with room for a loaded machine: local R2 may write only a few MB/s then. */
function slowUnary<T = any>(client: Client, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](req, new grpc.Metadata(), { deadline: Date.now() + 3600_000 }, (err: grpc.ServiceError | null, res: T) =>
      err ? reject(err) : resolve(res),
    );
  });
}

export async function benchChunking(o: { httpUrl: string; cas: Client; totalBytes: number; log: (s: string) => void }): Promise<{ rows: Row[]; notes: string[] }> {
  const { httpUrl, cas, log } = o;
  const mb = (n: number) => n / 1e6;
  const a = agent(2);
  try {
    const blob = bigBlob(`chunking-${randomBytes(6).toString("hex")}`, o.totalBytes - TAIL);
    log(`chunking: uploading a ${fmt(blob.size / MiB)} MiB blob by HTTP PUT (one verified R2 put: the yardstick)`);
    let t = now();
    await put(`${httpUrl}/cache/${INSTANCE}/cas/${blob.hash}`, blob.size, blob.chunks(), a);
    const putRate = mb(blob.size) / ((now() - t) / 1000);

    log("chunking: SplitBlob (first: reads, cuts and stores the chunks)");
    t = now();
    const split = await slowUnary(cas, "SplitBlob", { instance_name: INSTANCE, blob_digest: { hash: blob.hash, size_bytes: String(blob.size) } });
    const splitS = (now() - t) / 1000;
    const chunks = split.chunk_digests as Digest[];
    if (chunks.reduce((n, c) => n + Number(c.size_bytes), 0) !== blob.size) throw new Error("SplitBlob's chunks do not add up to the blob");
    t = now();
    const again = await slowUnary(cas, "SplitBlob", { instance_name: INSTANCE, blob_digest: { hash: blob.hash, size_bytes: String(blob.size) } });
    const againMs = now() - t;
    if (JSON.stringify(again.chunk_digests) !== JSON.stringify(chunks)) throw new Error("the second SplitBlob differs from the first");

    // A new blob: the same chunks and a 64 KiB tail, exactly totalBytes (hashed here, streaming).
    const tail = randomBytes(TAIL);
    const tailDigest = { hash: createHash("sha256").update(tail).digest("hex"), size_bytes: String(TAIL) };
    await unary(cas, "BatchUpdateBlobs", { instance_name: INSTANCE, requests: [{ digest: tailDigest, data: tail }] });
    const h = createHash("sha256");
    for (const c of blob.chunks()) h.update(c);
    const target = { hash: h.update(tail).digest("hex"), size_bytes: String(o.totalBytes) };
    log(`chunking: SpliceBlob of ${chunks.length + 1} chunks into ${fmt(o.totalBytes / MiB)} MiB`);
    t = now();
    await slowUnary(cas, "SpliceBlob", { instance_name: INSTANCE, blob_digest: target, chunk_digests: [...chunks, tailDigest] });
    const spliceS = (now() - t) / 1000;
    // Checked untimed: the spliced blob reads back whole and hashes right.
    const check = createHash("sha256");
    const n = await get(`${httpUrl}/cache/${INSTANCE}/cas/${target.hash}`, a, (c) => check.update(c));
    if (n !== o.totalBytes || check.digest("hex") !== target.hash) throw new Error("the spliced blob does not read back intact");

    const label = `${fmt(o.totalBytes / MiB, 0)} MiB`;
    const limit = `HTTP PUT ${fmt(putRate)} MB/s`;
    const splitRate = mb(blob.size) / splitS;
    const spliceRate = mb(o.totalBytes) / spliceS;
    return {
      rows: [
        { metric: `limit: HTTP PUT ${label} into Kiln (one verified R2 put)`, value: `${fmt(putRate)} MB/s`, limit: "-", ratio: "-" },
        { metric: `SplitBlob ${label} (read, FastCDC, store ${chunks.length} chunks)`, value: `${fmt(splitRate)} MB/s`, limit, ratio: `${(splitRate / putRate).toFixed(2)}x` },
        { metric: `SplitBlob ${label} again (recorded split)`, value: `${fmt(againMs)} ms`, limit: "-", ratio: "-" },
        { metric: `SpliceBlob ${label} (${chunks.length + 1} chunks, one verified put)`, value: `${fmt(spliceRate)} MB/s`, limit, ratio: `${(spliceRate / putRate).toFixed(2)}x` },
      ],
      notes: [`chunking: split ${fmt(splitS)} s, splice ${fmt(spliceS)} s; mean chunk ${fmt(blob.size / chunks.length / KiB)} KiB`],
    };
  } finally {
    a.destroy();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const log = (s: string) => process.stderr.write(`[bench chunking] ${s}\n`);
  const stack = await startStack();
  const clients = connect(stack.grpcTarget);
  try {
    const mib = Number(process.env.BENCH_CHUNK_MIB) || 1024;
    const { rows, notes } = await benchChunking({ httpUrl: stack.httpUrl, cas: clients.cas, totalBytes: mib * MiB, log });
    for (const r of rows) console.log(`${r.metric}: ${r.value}`);
    for (const n of notes) console.log(`- ${n}`);
  } finally {
    clients.close();
    await stack.stop();
  }
}
