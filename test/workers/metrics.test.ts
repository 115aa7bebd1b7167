// GET /metrics: Prometheus text whose counters move by exactly the traffic sent, latency
// histograms that add up, and admin-only access once keys are configured.
import { SELF, env } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { codeOf, connectClient } from "./helpers.ts";
import { scrape } from "./metrics-helpers.ts";

const ADMIN = "metrics-admin-key-0123456789-0123456789";
const USER = "metrics-user-key-0123456789-0123456789";

const FIND = 'surface="connect",method="ContentAddressableStorage.FindMissingBlobs"';

describe("/metrics", () => {
  it("counts requests by surface, method and code, with a latency histogram per method", async () => {
    const before = await scrape();
    const cas = connectClient(ContentAddressableStorage);
    const ok = { instanceName: "metrics", blobDigests: [{ hash: "f".repeat(64), sizeBytes: 1n }] };
    const bad = { instanceName: "metrics", blobDigests: [{ hash: "nothex", sizeBytes: 1n }] };
    for (let i = 0; i < 3; i++) expect(await codeOf(cas.findMissingBlobs(ok))).toBe("ok");
    for (let i = 0; i < 2; i++) expect(await codeOf(cas.findMissingBlobs(bad))).not.toBe("ok");
    const after = await scrape();
    const delta = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
    expect(delta(`kiln_requests_total{${FIND},code="OK"}`)).toBe(3);
    expect(delta(`kiln_requests_total{${FIND},code="INVALID_ARGUMENT"}`)).toBe(2);
    expect(delta(`kiln_request_duration_seconds_count{${FIND}}`)).toBe(5);
    expect(delta(`kiln_request_duration_seconds_bucket{${FIND},le="+Inf"}`)).toBe(5);
    // Cumulative buckets never decrease.
    const buckets = [...after].filter(([k]) => k.startsWith(`kiln_request_duration_seconds_bucket{${FIND}`)).map(([, v]) => v);
    expect(buckets.length).toBeGreaterThan(2);
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
    expect(delta(`kiln_request_bytes_total{surface="connect",direction="in"}`)).toBeGreaterThan(0);
    expect(after.get("kiln_isolate_start_time_seconds")).toBeGreaterThan(0);
  });

  describe("with keys configured", () => {
    beforeAll(() => {
      env.API_KEYS = JSON.stringify([
        { key: ADMIN, name: "ops", admin: true },
        { key: USER, name: "ci" },
      ]);
    });
    afterAll(() => {
      delete env.API_KEYS;
    });

    it("is for admin keys only: 401 without a key, 403 for a plain key", async () => {
      expect((await SELF.fetch("http://kiln/metrics")).status).toBe(401);
      const plain = await SELF.fetch("http://kiln/metrics", { headers: { authorization: `Bearer ${USER}` } });
      expect(plain.status).toBe(403);
      expect(((await plain.json()) as { error: { message: string } }).error.message).toMatch(/"ci" is not an admin key/);
      await scrape({ authorization: `Bearer ${ADMIN}` });
    });
  });
});
