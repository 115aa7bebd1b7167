// /metrics after known traffic: cache hits and misses, bytes, and billed operations (R2 Class A
// and B, Durable Object requests) move by exactly what a known sequence of calls costs, each
// attributed to the request kind that made it; pool gauges come from the shards; and with an
// Analytics Engine binding the same counts arrive as data points.
import { SELF, env } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { ActionCache, ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { connectRunner } from "./fake-runner.ts";
import { codeOf, connectClient } from "./helpers.ts";
import { changed, scrape } from "./metrics-helpers.ts";
import { SMALL_BLOB_MAX_BYTES } from "../../src/shared/small-blob-size.ts";

const sha256 = async (bytes: Uint8Array) =>
  [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");

const CACHE_AND_R2 = ["kiln_cas_lookups_total", "kiln_action_cache_lookups_total", "kiln_r2_operations_total"];
const r2 = (cls: string, op: string, request: string) => `kiln_r2_operations_total{class="${cls}",op="${op}",request="${request}"}`;
const dos = (object: string, method: string, request: string) => `kiln_do_requests_total{object="${object}",method="${method}",request="${request}"}`;

/** The change of the cache and R2 counters (and of the listed DO series) over `step`. */
async function measure(step: () => Promise<void>, extra: string[] = []) {
  const before = await scrape();
  await step();
  const after = await scrape();
  return { exact: changed(before, after, CACHE_AND_R2), of: (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0), extra };
}

describe("/metrics after known traffic", () => {
  const cas = connectClient(ContentAddressableStorage);
  const ac = connectClient(ActionCache);

  it("counts the writes and reads of a blob in R2: one Class A put, one Class B get per read, hits and misses, bytes", async () => {
    const data = new TextEncoder().encode(`metrics traffic ${crypto.randomUUID()}`.padEnd(SMALL_BLOB_MAX_BYTES + 1, "."));
    const hash = await sha256(data);
    const put = await measure(async () => {
      expect((await SELF.fetch(`http://kiln/cache/cas/${hash}`, { method: "PUT", body: data })).status).toBe(200);
    });
    expect(put.exact).toEqual({ [r2("A", "put", "http-cache PUT cas")]: 1 });
    // A blob is stored without asking the index first (src/services/blobs.ts), then the index is
    // told it is there: one Durable Object request.
    expect(put.of(dos("CAS_INDEX", "present", "http-cache PUT cas"))).toBe(0);
    expect(put.of(dos("CAS_INDEX", "add", "http-cache PUT cas"))).toBe(1);
    expect(put.of(`kiln_request_bytes_total{surface="http-cache",direction="in"}`)).toBe(data.byteLength);

    const reads = await measure(async () => {
      expect((await SELF.fetch(`http://kiln/cache/cas/${hash}`)).status).toBe(200);
      expect((await SELF.fetch(`http://kiln/cache/cas/${hash}`)).status).toBe(200);
      expect((await SELF.fetch(`http://kiln/cache/cas/${"0".repeat(64)}`)).status).toBe(404);
    });
    expect(reads.exact).toEqual({
      [r2("B", "get", "http-cache GET cas")]: 3,
      'kiln_cas_lookups_total{kind="read",result="hit"}': 2,
      'kiln_cas_lookups_total{kind="read",result="miss"}': 1,
    });
    // The HTTP cache names blobs without their sizes: the index is asked first whether it holds the blob.
    expect(reads.of(dos("CAS_INDEX", "smallBlob", "http-cache GET cas"))).toBe(3);
    expect(reads.of(`kiln_request_bytes_total{surface="http-cache",direction="out"}`)).toBeGreaterThanOrEqual(2 * data.byteLength);
  });

  it("counts the writes and reads of a small blob: no R2 operation, one Durable Object request each", async () => {
    const data = new TextEncoder().encode(`metrics traffic ${crypto.randomUUID()}`);
    const hash = await sha256(data);
    const put = await measure(async () => {
      expect((await SELF.fetch(`http://kiln/cache/cas/${hash}`, { method: "PUT", body: data })).status).toBe(200);
    });
    expect(put.exact).toEqual({});
    expect(put.of(dos("CAS_INDEX", "addSmall", "http-cache PUT cas"))).toBe(1);
    expect(put.of(dos("CAS_INDEX", "add", "http-cache PUT cas"))).toBe(0);
    expect(put.of(`kiln_request_bytes_total{surface="http-cache",direction="in"}`)).toBe(data.byteLength);

    const reads = await measure(async () => {
      expect((await SELF.fetch(`http://kiln/cache/cas/${hash}`)).status).toBe(200);
      expect((await cas.batchReadBlobs({ digests: [{ hash, sizeBytes: BigInt(data.byteLength) }] })).responses[0]!.data).toEqual(data);
    });
    expect(reads.exact).toEqual({
      'kiln_cas_lookups_total{kind="read",result="hit"}': 2,
    });
    expect(reads.of(dos("CAS_INDEX", "smallBlob", "http-cache GET cas"))).toBe(1);
    expect(reads.of(dos("CAS_INDEX", "smallBlobs", "connect ContentAddressableStorage.BatchReadBlobs"))).toBe(1);

    const find = await measure(async () => {
      const res = await cas.findMissingBlobs({
        instanceName: "",
        blobDigests: [
          { hash, sizeBytes: BigInt(data.byteLength) },
          { hash: "e".repeat(64), sizeBytes: 3n },
          { hash: "f".repeat(64), sizeBytes: 4n },
        ],
      });
      expect(res.missingBlobDigests).toHaveLength(2);
    });
    // FindMissingBlobs reads the index only: no R2 operation at all.
    expect(find.exact).toEqual({ 'kiln_cas_lookups_total{kind="find_missing",result="hit"}': 1, 'kiln_cas_lookups_total{kind="find_missing",result="miss"}': 2 });
    expect(find.of(dos("CAS_INDEX", "present", "connect ContentAddressableStorage.FindMissingBlobs"))).toBeGreaterThanOrEqual(1);
  });

  it("counts action-cache misses and hits, and the R2 operations of each", async () => {
    const action = { hash: await sha256(new TextEncoder().encode(crypto.randomUUID())), sizeBytes: 10n };
    const miss = await measure(async () => {
      expect(await codeOf(ac.getActionResult({ instanceName: "", actionDigest: action }))).toBe(Code.NotFound);
    });
    expect(miss.exact).toEqual({
      'kiln_action_cache_lookups_total{via="get",result="miss"}': 1,
      [r2("B", "get", "connect ActionCache.GetActionResult")]: 1,
    });
    const update = await measure(async () => {
      await ac.updateActionResult({ instanceName: "", actionDigest: action, actionResult: { exitCode: 0 } });
    });
    expect(update.exact).toEqual({ [r2("A", "put", "connect ActionCache.UpdateActionResult")]: 1 });
    const hit = await measure(async () => {
      await ac.getActionResult({ instanceName: "", actionDigest: action });
    });
    expect(hit.exact).toEqual({
      'kiln_action_cache_lookups_total{via="get",result="hit"}': 1,
      [r2("B", "get", "connect ActionCache.GetActionResult")]: 1,
    });
  });

  it("reads queue depth, running actions and runners from the pool shards at scrape time", async () => {
    const m = await scrape();
    for (const g of ["kiln_pool_queued_actions", "kiln_pool_running_actions", "kiln_pool_runners", "kiln_pool_outbox_events"]) {
      expect(m.get(`${g}{shard="0"}`)).toBe(0);
    }
    // The scrape's own shard read is a billed request, counted once the scrape is answered.
    const again = await scrape();
    expect((again.get(dos("RUNNER_POOL", "stats", "admin GET /metrics")) ?? 0) - (m.get(dos("RUNNER_POOL", "stats", "admin GET /metrics")) ?? 0)).toBe(1);
  });

  it("counts a runner's connection and WebSocket messages as billed pool requests, and the runner in the gauges", async () => {
    const before = await scrape();
    const runner = await connectRunner({ slots: 3 });
    try {
      // The runner's Hello is handled by the pool shortly after the socket opens.
      let after = await scrape();
      while ((after.get('kiln_pool_runners{shard="0"}') ?? 0) === 0) after = await scrape();
      expect(after.get('kiln_pool_runners{shard="0"}')).toBe(1);
      expect(after.get('kiln_pool_runner_slots{shard="0"}')).toBe(3);
      const d = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
      expect(d(dos("RUNNER_POOL", "fetch", "websocket upgrade"))).toBe(1);
      // Messages reach the object without a stub call: counted by the object, as internal work.
      expect(d(dos("RUNNER_POOL", "webSocketMessage", "internal"))).toBeGreaterThanOrEqual(1);
    } finally {
      runner.close();
    }
  });

  describe("with an Analytics Engine binding", () => {
    const points: AnalyticsEngineDataPoint[] = [];
    afterEach(() => {
      delete (env as { ANALYTICS?: unknown }).ANALYTICS;
    });

    it("writes one data point per request with the same counts", async () => {
      // The vitest plugin's local dataset keeps nothing, so a recording object stands in for it.
      (env as { ANALYTICS?: unknown }).ANALYTICS = { writeDataPoint: (p: AnalyticsEngineDataPoint) => void points.push(p) };
      const data = new TextEncoder().encode(`analytics ${crypto.randomUUID()}`);
      const hash = await sha256(data);
      expect((await SELF.fetch(`http://kiln/cache/cas/${hash}`, { method: "PUT", body: data })).status).toBe(200);
      expect((await SELF.fetch(`http://kiln/cache/cas/${hash}`)).status).toBe(200);
      const requests = points.filter((p) => p.blobs?.[0] === "request");
      expect(requests.map((p) => p.blobs?.slice(1, 4))).toEqual([
        ["http-cache", "PUT cas", "OK"],
        ["http-cache", "GET cas", "OK"],
      ]);
      const [put, get] = requests.map((p) => p.doubles!);
      // requests, seconds, bytes in, bytes out, R2 A, R2 B, DO requests, AC hit, AC miss, CAS hit, CAS miss
      // (a small blob: kept in the index, no R2 operation)
      expect([put![0], put![2], put![4], put![5], put![6]]).toEqual([1, data.byteLength, 0, 0, 1]);
      expect([get![0], get![3], get![4], get![5], get![6], get![9], get![10]]).toEqual([1, data.byteLength, 0, 0, 1, 1, 0]);
    });

    it("writes a data point for each count made outside a request (a runner's WebSocket message)", async () => {
      (env as { ANALYTICS?: unknown }).ANALYTICS = { writeDataPoint: (p: AnalyticsEngineDataPoint) => void points.push(p) };
      const runner = await connectRunner({ slots: 1 });
      try {
        const internal = () => points.find((p) => p.blobs?.[0] === "internal" && String(p.blobs[2]).includes("webSocketMessage"));
        while (!internal()) await scrape();
        expect(internal()).toMatchObject({
          indexes: ["internal"],
          blobs: ["internal", "kiln_do_requests_total", 'object="RUNNER_POOL",method="webSocketMessage"', "internal"],
          doubles: [1],
        });
      } finally {
        runner.close();
      }
    });
  });
});
