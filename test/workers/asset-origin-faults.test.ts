// A Remote Asset fetch from an origin (src/services/asset-origin.ts) when Kiln's storage fails:
// R2 or the CAS index failing (the staging object a download without a SHA-256 goes through, the
// CAS write, the index record) is thrown UNAVAILABLE, never answered as the origin's failure;
// the fetch leaves no staging object behind where it can delete it, and an undeletable one does
// not turn a fetch that worked into a failure; the tenant's next staged fetch sweeps it. A body
// without a length, sent in parts (an R2 multipart upload), has its upload aborted. An origin that
// breaks off mid-body is the origin's failure: a status.
import { env } from "cloudflare:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, inject, it } from "vitest";
import { fetchFromOrigin } from "../../src/services/asset-origin.ts";
import { parseQualifiers } from "../../src/services/asset-qualifiers.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { failingBucket, failingIndex, type When } from "./fault-injection.ts";
import { bytes, sha256Hex } from "./helpers.ts";
import { isOpen, watchUploads } from "./multipart-uploads.ts";

const origin = inject("assetOrigin");
const allow = new Set([new URL(origin).host]);
const tenant = () => `asset-${crypto.randomUUID().slice(0, 8)}`;
const staged = async (t: string) => (await env.CAS.list({ prefix: `asset-staging/${t}/` })).objects.length;
const sri256 = async (text: string) => `sha256-${btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes(text)))))}`;
/** Fetches `text` from the origin into `store`; `sha256`: with its checksum.sri (the direct path), else staged. */
const fetchInto = async (store: BlobStore, text: string, opts: { sha256?: boolean; query?: string } = {}) =>
  fetchFromOrigin(
    store,
    `${origin}/files/${crypto.randomUUID()}?text=${encodeURIComponent(text)}${opts.query ?? ""}`,
    parseQualifiers(opts.sha256 ? [{ name: "checksum.sri", value: await sri256(text) } as never] : [], 1),
    { allow, signal: new AbortController().signal },
  );
const thrown = (p: Promise<unknown>) => p.then(
  (r) => expect.unreachable(`it resolved: ${JSON.stringify(r)}`),
  (e: unknown) => ConnectError.from(e),
);
const stored = async (t: string, text: string) => (await new BlobStore(env, t).index.missing([{ hash: await sha256Hex(text), size: text.length }])).length === 0;

for (const when of ["before", "after"] as When[]) {
  it(`a staging object R2 fails to delete ${when} it is gone: the fetch still succeeds with the blob stored`, async () => {
    const t = tenant();
    const text = `staged ${crypto.randomUUID()}`.repeat(300); // over 4 KiB: an R2 blob
    const store = new BlobStore(failingBucket((op, k) => op === "delete" && k.startsWith("asset-staging/"), when), t);
    const got = await fetchInto(store, text);
    expect(got).toMatchObject({ ok: true, digest: { hash: await sha256Hex(text), size: text.length } });
    expect(await new BlobStore(env, t).index.missing([{ hash: await sha256Hex(text), size: text.length }])).toEqual([]);
    expect(await staged(t)).toBe(when === "before" ? 1 : 0);
  });
}

describe("Kiln's storage failing during a download is thrown UNAVAILABLE, not answered as the origin's failure", () => {
  it("a staging put R2 fails: nothing stored, no staging object left", async () => {
    const t = tenant();
    const text = `never staged ${crypto.randomUUID()}`.repeat(300);
    const store = new BlobStore(failingBucket((op, k) => op === "put" && k.startsWith("asset-staging/")), t);
    const err = await thrown(fetchInto(store, text));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(/the download could not be staged in R2 \(injected: R2 put of asset-staging\/.*\); nothing was stored/);
    expect(await stored(t, text)).toBe(false);
    expect(await staged(t)).toBe(0);
  });

  for (const when of ["before", "after"] as When[]) {
    it(`the staged object R2 fails to read back ${when === "before" ? "at all" : "mid-way"}: nothing stored, no staging object left`, async () => {
      const t = tenant();
      const text = `unreadable ${crypto.randomUUID()}`.repeat(120);
      const store = new BlobStore(failingBucket((op, k) => op === "get" && k.startsWith("asset-staging/"), when), t);
      const err = await thrown(fetchInto(store, text));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/staged download could not be read.*injected: R2 get of asset-staging\//);
      expect(await stored(t, text)).toBe(false);
      expect(await staged(t)).toBe(0);
    });
  }

  for (const sha256 of [true, false]) {
    const path = sha256 ? "checksum.sri sha256 (straight into the CAS)" : "no sha256 (staged)";
    it(`the CAS write R2 fails, ${path}`, async () => {
      const t = tenant();
      const text = `cas put fails ${crypto.randomUUID()}`.repeat(120);
      const store = new BlobStore(failingBucket((op, k) => op === "put" && k.startsWith("cas/")), t);
      const err = await thrown(fetchInto(store, text, { sha256 }));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/injected: R2 put of cas\//);
      expect(await stored(t, text)).toBe(false);
    });

    it(`the CAS index fails to record the blob, ${path}`, async () => {
      const t = tenant();
      const text = `index add fails ${crypto.randomUUID()}`.repeat(120);
      const store = new BlobStore(failingIndex(["add"], "before"), t);
      const err = await thrown(fetchInto(store, text, { sha256 }));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/injected: CAS index add/);
    });

    it(`an origin that breaks off mid-body is the origin's failure (a status), ${path}`, async () => {
      const t = tenant();
      const text = `cut ${crypto.randomUUID()}`.repeat(120);
      const got = await fetchInto(new BlobStore(env, t), text, { sha256, query: "&cut=1" });
      expect(got).toMatchObject({ ok: false, code: Code.Unavailable, message: expect.stringMatching(/downloading .*nothing was stored/) });
      expect(await stored(t, text)).toBe(false);
      expect(await staged(t)).toBe(0);
    });
  }
});

describe("R2 failing a multipart upload of a body without a length (over 8 MiB) is UNAVAILABLE, the upload aborted", () => {
  const SIZE = 20 * 1024 * 1024;
  let nextByte = 200;
  const cases: [string, "uploadPart" | "complete", When, boolean][] = [
    ["a part R2 refuses", "uploadPart", "before", true],
    ["a part R2 refuses", "uploadPart", "before", false],
    ["a part stored whose answer is lost", "uploadPart", "after", false],
    ["completing it", "complete", "before", true],
    ["completing it", "complete", "before", false],
  ];
  for (const [what, op, when, sha256] of cases) {
    it(`${what} (${op}, ${when}), ${sha256 ? "checksum.sri sha256 (under its CAS key)" : "no sha256 (staged)"}`, async () => {
      const t = tenant();
      const data = new Uint8Array(SIZE).fill(nextByte);
      const hash = await sha256Hex(data);
      const sri = `sha256-${btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", data))))}`;
      const { env: watched, uploads } = watchUploads(failingBucket((o) => o === op, when));
      const uri = `${origin}/archive/${crypto.randomUUID()}?repeat=${SIZE}&byte=${nextByte++}&chunked=1`;
      const q = parseQualifiers(sha256 ? [{ name: "checksum.sri", value: sri } as never] : [], 1);
      const err = await thrown(fetchFromOrigin(new BlobStore(watched, t), uri, q, { allow, signal: new AbortController().signal }));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(op === "uploadPart" ? /part 1 of the download could not be stored in R2 \(injected: R2 uploadPart 1 of / : /could not be completed in R2 \(injected: R2 complete of /);
      expect(err.rawMessage).toMatch(/nothing was stored; retry$/);
      expect(uploads).toHaveLength(1);
      expect(await isOpen(uploads[0]!)).toBe(false);
      expect(await new BlobStore(env, t).index.missing([{ hash, size: SIZE }])).toHaveLength(1);
      expect(await env.CAS.head(`cas/${t}/${hash}`)).toBeNull();
      expect(await staged(t)).toBe(0);
    });
  }
});

it("staging objects left behind by fetches that died are swept by the tenant's next staged fetch, once over an hour old", async () => {
  const t = tenant();
  const prefix = `asset-staging/${t}/`;
  await env.CAS.put(`${prefix}abandoned`, "x", { customMetadata: { "staged-at": String(Date.now() - 2 * 3600_000) } });
  await env.CAS.put(`${prefix}in-flight`, "y", { customMetadata: { "staged-at": String(Date.now() - 60_000) } });
  const got = await fetchInto(new BlobStore(env, t), `swept ${crypto.randomUUID()}`.repeat(300));
  expect(got.ok).toBe(true);
  expect((await env.CAS.list({ prefix })).objects.map((o) => o.key)).toEqual([`${prefix}in-flight`]);
});
