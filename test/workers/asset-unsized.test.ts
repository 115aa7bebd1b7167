// Remote Asset downloads of bodies without a Content-Length (chunked, as GitHub serves its archive
// tarballs) beyond one part (8 MiB): streamed into R2 multipart uploads hashed on the way, kept
// only if checksum.sri matches, with nothing left behind when they are not (no CAS blob, no
// staging object, no open upload); and ASSET_FETCH_MAX_BYTES, which refuses a declared length
// over it before reading a byte and a body without one once it passes it.
import { env } from "cloudflare:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { base64Encode } from "@bufbuild/protobuf/wire";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, inject, it } from "vitest";
import { Fetch } from "../../src/gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { RequestMetadataSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { fetchFromOrigin, type OriginResult } from "../../src/services/asset-origin.ts";
import { parseQualifiers } from "../../src/services/asset-qualifiers.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { connectClient, errorOf } from "./helpers.ts";
import { isOpen, watchUploads } from "./multipart-uploads.ts";

const origin = inject("assetOrigin");
const allow = new Set([new URL(origin).host]);
const MiB = 1024 * 1024;
const SIZE = 20 * MiB;
const tenant = () => `unsized-${crypto.randomUUID().slice(0, 8)}`;

type Alg = "SHA-256" | "SHA-384";
const b64 = (buf: ArrayBuffer) => btoa(String.fromCharCode(...new Uint8Array(buf)));
const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
/** What the origin sends for ?repeat=size&byte=b: `size` bytes of value b. */
const content = (b: number, size = SIZE) => new Uint8Array(size).fill(b);
const sriOf = async (alg: Alg, data: Uint8Array) => `${alg.replace("-", "").toLowerCase()}-${b64(await crypto.subtle.digest(alg, data))}`;

/** A fresh byte value per test (a blob no earlier test stored), and its content's hashes. */
let nextByte = 1;
async function body(size = SIZE) {
  const b = nextByte++;
  const data = content(b, size);
  return { b, size, sha256: hex(await crypto.subtle.digest("SHA-256", data)), sri: (alg: Alg) => sriOf(alg, data) };
}

/** FetchBlob's download of `query` from the origin into tenant `t`, its multipart uploads watched. */
async function download(t: string, query: string, sri: string[], maxBytes?: number) {
  const { env: watched, uploads } = watchUploads();
  const uri = `${origin}/archive/${crypto.randomUUID()}.tar.gz?${query}`;
  const q = parseQualifiers(sri.length ? [{ name: "checksum.sri", value: sri.join(" ") } as never] : [], 1);
  const got = await fetchFromOrigin(new BlobStore(watched, t), uri, q, { allow, signal: new AbortController().signal, maxBytes });
  return { got, uploads };
}

/** The SHA-256 of the blob as the CAS serves it back. */
async function readBack(t: string, d: { hash: string; size: number }) {
  const { body } = await new BlobStore(env, t).read(d);
  const ds = new crypto.DigestStream("SHA-256");
  await body.pipeTo(ds);
  return hex(await ds.digest);
}

/** Nothing of the download is anywhere: no blob (index or R2), no staging object, no open upload. */
async function leftNothing(t: string, sha256: string, size: number, uploads: { key: string; uploadId: string }[]) {
  expect(await new BlobStore(env, t).index.missing([{ hash: sha256, size }])).toHaveLength(1);
  expect(await env.CAS.head(`cas/${t}/${sha256}`)).toBeNull();
  expect((await env.CAS.list({ prefix: `asset-staging/${t}/` })).objects).toEqual([]);
  for (const u of uploads) expect(await isOpen(u), `upload of ${u.key}`).toBe(false);
}

function ok(got: OriginResult): asserts got is Extract<OriginResult, { ok: true }> {
  if (!got.ok) expect.unreachable(`${got.code}: ${got.message}`);
}

it("isOpen, which the checks below rely on, tells an open upload from an aborted or completed one", async () => {
  const key = `asset-staging/probe/${crypto.randomUUID()}`;
  const open = await env.CAS.createMultipartUpload(key);
  expect(await isOpen(open)).toBe(true); // and aborted by asking
  expect(await isOpen(open)).toBe(false);
  const done = await env.CAS.createMultipartUpload(key);
  await done.complete([await done.uploadPart(1, "x")]);
  expect(await isOpen(done)).toBe(false);
  await env.CAS.delete(key);
});

describe("a chunked body over one part is stored through a multipart upload", () => {
  it("with a sha256 checksum.sri: straight under its CAS key, and reads back with that hash", async () => {
    const t = tenant();
    const c = await body();
    const { got, uploads } = await download(t, `repeat=${SIZE}&byte=${c.b}&chunked=1`, [await c.sri("SHA-256")]);
    ok(got);
    expect(got.digest).toEqual({ hash: c.sha256, size: SIZE });
    expect(uploads.map((u) => u.key)).toEqual([`cas/${t}/${c.sha256}`]);
    expect(await readBack(t, got.digest)).toBe(c.sha256);
    expect(await isOpen(uploads[0]!)).toBe(false);
  });

  for (const [what, algs] of [
    ["with a sha384 checksum.sri only", ["SHA-384"]],
    ["without checksum.sri", []],
  ] as [string, Alg[]][]) {
    it(`${what}: staged, hashed on the way, copied under its SHA-256; the staging object goes`, async () => {
      const t = tenant();
      const c = await body();
      const { got, uploads } = await download(t, `repeat=${SIZE}&byte=${c.b}&chunked=1`, await Promise.all(algs.map((a) => c.sri(a))));
      ok(got);
    expect(got.digest).toEqual({ hash: c.sha256, size: SIZE });
      if (algs.length) expect(`sha384-${got.checksums.sha384}`).toBe(await c.sri("SHA-384"));
      expect(uploads).toHaveLength(1);
      expect(uploads[0]!.key).toMatch(new RegExp(`^asset-staging/${t}/`));
      expect(await readBack(t, got.digest)).toBe(c.sha256);
      expect((await env.CAS.list({ prefix: `asset-staging/${t}/` })).objects).toEqual([]);
      expect(await isOpen(uploads[0]!)).toBe(false);
    });
  }

  it("a body of exactly one part is held and put whole, not sent in parts", async () => {
    const t = tenant();
    const c = await body(8 * MiB);
    const { got, uploads } = await download(t, `repeat=${c.size}&byte=${c.b}&chunked=1`, []);
    ok(got);
    expect(got.digest).toEqual({ hash: c.sha256, size: c.size });
    expect(uploads).toEqual([]);
  });
});

describe("a chunked body over one part that fails is not stored, and leaves nothing", () => {
  for (const alg of ["SHA-256", "SHA-384"] as Alg[]) {
    it(`a checksum.sri (${alg}) it does not match: ABORTED, the upload aborted, never completed`, async () => {
      const t = tenant();
      const c = await body();
      const other = await body();
      const { got, uploads } = await download(t, `repeat=${SIZE}&byte=${c.b}&chunked=1`, [await other.sri(alg)]);
      expect(got).toMatchObject({ ok: false, code: Code.Aborted, message: expect.stringMatching(/does not match checksum\.sri .*nothing was stored/) });
      expect(uploads).toHaveLength(1);
      await leftNothing(t, c.sha256, SIZE, uploads);
    });
  }

  for (const sha256 of [true, false]) {
    it(`an origin that breaks off after a part is sent (${sha256 ? "sha256: CAS key" : "staged"}): a status, the upload aborted`, async () => {
      const t = tenant();
      const c = await body();
      // The origin sends half (10 MiB: a whole part and more), then drops the connection.
      const { got, uploads } = await download(t, `repeat=${SIZE}&byte=${c.b}&chunked=1&cut=1`, sha256 ? [await c.sri("SHA-256")] : []);
      expect(got).toMatchObject({ ok: false, code: Code.Unavailable, message: expect.stringMatching(/downloading .*nothing was stored/) });
      expect(uploads).toHaveLength(1);
      await leftNothing(t, c.sha256, SIZE, uploads);
    });
  }
});

describe("ASSET_FETCH_MAX_BYTES", () => {
  afterEach(() => {
    delete env.ASSET_FETCH_MAX_BYTES;
    delete env.ASSET_FETCH_ALLOW;
  });

  it("refuses a declared Content-Length over it before reading the body (a terabyte answers at once)", async () => {
    const t = tenant();
    const started = Date.now();
    const { got, uploads } = await download(t, `repeat=${1e12}`, [], 16 * MiB);
    expect(got).toMatchObject({ ok: false, code: Code.ResourceExhausted, message: expect.stringMatching(/declares 1000000000000 bytes .*ASSET_FETCH_MAX_BYTES \(16777216\); nothing was stored/) });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(uploads).toEqual([]);
    expect((await env.CAS.list({ prefix: `asset-staging/${t}/` })).objects).toEqual([]);
  });

  for (const sha256 of [true, false]) {
    it(`refuses a chunked body once it passes it, mid-upload (${sha256 ? "sha256: CAS key" : "staged"}): nothing stored, the upload aborted`, async () => {
      const t = tenant();
      const c = await body();
      const { got, uploads } = await download(t, `repeat=${SIZE}&byte=${c.b}&chunked=1`, sha256 ? [await c.sri("SHA-256")] : [], 12 * MiB);
      expect(got).toMatchObject({ ok: false, code: Code.ResourceExhausted, message: expect.stringMatching(/no Content-Length and more than 12582912 bytes.*ASSET_FETCH_MAX_BYTES/) });
      expect(uploads).toHaveLength(1);
      await leftNothing(t, c.sha256, SIZE, uploads);
    });
  }

  it("refuses a chunked body under one part that passes it, before any upload", async () => {
    const t = tenant();
    const c = await body(2 * MiB);
    const { got, uploads } = await download(t, `repeat=${c.size}&byte=${c.b}&chunked=1`, [], MiB);
    expect(got).toMatchObject({ ok: false, code: Code.ResourceExhausted });
    expect(uploads).toEqual([]);
    await leftNothing(t, c.sha256, c.size, uploads);
  });

  it("is read from the environment by FetchBlob: a body over it is RESOURCE_EXHAUSTED, one within it stored", async () => {
    env.ASSET_FETCH_ALLOW = new URL(origin).host;
    env.ASSET_FETCH_MAX_BYTES = String(MiB);
    const fetcher = connectClient(Fetch);
    const over = await fetcher.fetchBlob({ uris: [`${origin}/big/${crypto.randomUUID()}?repeat=${MiB + 1}`] });
    expect(over.status).toMatchObject({ code: Code.ResourceExhausted, message: expect.stringMatching(/declares 1048577 bytes/) });
    const within = await fetcher.fetchBlob({ uris: [`${origin}/big/${crypto.randomUUID()}?repeat=${MiB}&chunked=1`] });
    expect(within.status?.code ?? 0).toBe(0);
    expect(within.blobDigest?.sizeBytes).toBe(BigInt(MiB));
    // Raised to Bazel as FAILED_PRECONDITION: its retrier retries RESOURCE_EXHAUSTED, each time a
    // download up to the limit that fails the same way.
    const md = toBinary(RequestMetadataSchema, create(RequestMetadataSchema, { toolDetails: { toolName: "bazel", toolVersion: "7.4.0" } }));
    const bazel = connectClient(Fetch, { "build.bazel.remote.execution.v2.requestmetadata-bin": base64Encode(md) });
    const e = await errorOf(bazel.fetchBlob({ uris: [`${origin}/big/${crypto.randomUUID()}?repeat=${MiB + 1}`] }));
    expect([e.code, e.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/ASSET_FETCH_MAX_BYTES/)]);
  });
});
