// Fuzz: malformed requests to the plain-HTTP surfaces: the Bazel HTTP cache (/cache/...) and
// blobs under their ByteStream names (GET /{instance}/blobs/..., PUT /{instance}/uploads/...).
// Bad hashes and sizes, bad %-encodings, lying Content-Length, broken Range headers, bodies that
// do not hash to their names, action results that do not parse.
import { describe, expect, it } from "vitest";
import { ActionResultSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import {
  FUZZ_CASES,
  FUZZ_TIMEOUT_MS,
  breakMessage,
  describeFaults,
  encode,
  fuzzHash,
  fuzzSegment,
  fuzzSize,
  randomMessage,
  runFuzz,
  type Case,
  type Rng,
} from "./fuzz-helpers.ts";

const RANGES = ["bytes=0-0", "bytes=-5", "bytes=5-", "bytes=9999999999-", "bytes=3-1", "bytes=0-1,2-3", "items=0-1", "bytes=-0", "bytes=abc"];

const instance = (r: Rng) => Array.from({ length: r.int(3) }, () => fuzzSegment(r)).join("/");

function headersFor(r: Rng, bodyLength: number): Record<string, string> {
  const h: Record<string, string> = {};
  if (r.chance(0.2)) h.range = r.pick(RANGES);
  if (r.chance(0.1)) h["content-length"] = r.pick(["abc", "-1", String(bodyLength + 10), "99999999999999999999"]);
  if (r.chance(0.1)) h.authorization = r.pick(["Bearer", "Basic !!!", "Basic " + btoa(":"), "Digest x"]);
  return h;
}

/** Bodies for a CAS PUT: never the bytes the name promises, so nothing is stored. */
const blobBody = (r: Rng) => r.bytes(r.int(200));

function httpCacheCase(r: Rng): Case {
  const kind = r.pick(["ac", "cas", "ac", "cas", "blobs", ""]);
  const method = r.pick(["GET", "HEAD", "PUT", "PUT", "DELETE", "POST"]);
  const path = `/cache/${instance(r)}${r.chance(0.5) ? "/" : ""}${kind}/${fuzzHash(r)}`;
  let body: Uint8Array | undefined;
  if (method === "PUT" || method === "POST") {
    // An action result that cannot parse: an AC entry needs no blobs, so a valid one would be stored.
    body = kind === "ac" ? breakMessage(r, encode(ActionResultSchema, randomMessage(ActionResultSchema, r), false)) : blobBody(r);
  }
  const url = `http://kiln${path}`;
  return { label: `${method} ${url.slice(0, 160)}`, request: new Request(url, { method, headers: headersFor(r, body?.byteLength ?? 0), body }) };
}

function blobCase(r: Rng): Case {
  const put = r.chance(0.5);
  const digest = `${r.pick(["blobs", "blobs", "compressed-blobs/zstd", "blob"])}/${fuzzHash(r)}/${fuzzSize(r)}${r.chance(0.1) ? "/extra" : ""}`;
  const upload = `uploads/${r.pick([crypto.randomUUID(), "", "%ZZ", "x".repeat(200)])}/`;
  const inst = instance(r);
  const path = `/${inst}${inst ? "/" : ""}${put ? upload : ""}${digest}`;
  const method = put ? "PUT" : r.pick(["GET", "HEAD"]);
  const body = put ? blobBody(r) : undefined;
  const url = `http://kiln${path}`;
  return { label: `${method} ${url.slice(0, 160)}`, request: new Request(url, { method, headers: headersFor(r, body?.byteLength ?? 0), body }) };
}

describe("fuzz: plain HTTP", () => {
  it(`the HTTP cache answers ${FUZZ_CASES.httpCache} malformed requests without a server fault and stores nothing`, { timeout: FUZZ_TIMEOUT_MS }, async () => {
    const { faults, stored } = await runFuzz(31337, FUZZ_CASES.httpCache, httpCacheCase);
    expect(faults.length, describeFaults(faults)).toBe(0);
    expect(stored).toEqual([]);
  });

  it(`blob HTTP answers ${FUZZ_CASES.blobHttp} malformed requests without a server fault and stores nothing`, { timeout: FUZZ_TIMEOUT_MS }, async () => {
    const { faults, stored } = await runFuzz(2718, FUZZ_CASES.blobHttp, blobCase);
    expect(faults.length, describeFaults(faults)).toBe(0);
    expect(stored).toEqual([]);
  });
});
