// A Remote Asset fetch from an origin (src/services/asset-origin.ts) when R2 fails around the
// staging object a download without a SHA-256 goes through: the fetch reports only what was
// stored, leaves no staging object behind where it can delete it, and an undeletable one does
// not turn a fetch that worked into a failure; the tenant's next staged fetch sweeps it.
import { env } from "cloudflare:test";
import { Code } from "@connectrpc/connect";
import { expect, inject, it } from "vitest";
import { fetchFromOrigin } from "../../src/services/asset-origin.ts";
import { parseQualifiers } from "../../src/services/asset-qualifiers.ts";
import { BlobStore } from "../../src/storage/blob-store.ts";
import { failingBucket, type When } from "./fault-injection.ts";
import { sha256Hex } from "./helpers.ts";

const origin = inject("assetOrigin");
const allow = new Set([new URL(origin).host]);
const tenant = () => `asset-${crypto.randomUUID().slice(0, 8)}`;
const staged = async (t: string) => (await env.CAS.list({ prefix: `asset-staging/${t}/` })).objects.length;
const fetchInto = (store: BlobStore, text: string) =>
  fetchFromOrigin(store, `${origin}/files/${crypto.randomUUID()}?text=${encodeURIComponent(text)}`, parseQualifiers([], 1), new Headers(), allow, new AbortController().signal);

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

it("a staging put R2 fails: UNAVAILABLE, nothing stored, no staging object left", async () => {
  const t = tenant();
  const text = `never staged ${crypto.randomUUID()}`.repeat(300);
  const store = new BlobStore(failingBucket((op, k) => op === "put" && k.startsWith("asset-staging/")), t);
  const got = await fetchInto(store, text);
  expect(got).toMatchObject({ ok: false, code: Code.Unavailable, message: expect.stringMatching(/injected: R2 put of asset-staging\/.*nothing was stored/) });
  expect(await new BlobStore(env, t).index.missing([{ hash: await sha256Hex(text), size: text.length }])).toHaveLength(1);
  expect(await staged(t)).toBe(0);
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
