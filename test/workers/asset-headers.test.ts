// Remote Asset header qualifiers (src/services/asset-headers.ts): bazel.auth_headers,
// http_header_url:N:NAME and http_header:NAME reach the scripted origin on the URIs they belong
// to, not after a redirect to another origin, are kept out of the asset's key and record, and
// malformed ones are INVALID_ARGUMENT with a reason that does not repeat the secret.
import { Code } from "@connectrpc/connect";
import { env } from "cloudflare:test";
import { afterEach, describe, expect, inject, it } from "vitest";
import { Fetch, Push } from "../../src/gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { connectClient, errorOf, sha256Hex, uniqueInstance, upload } from "./helpers.ts";

const fetcher = connectClient(Fetch);
const pusher = connectClient(Push);
const origin = inject("assetOrigin");
const other = inject("assetOtherOrigin");
const SECRET = "Bearer s3cret-" + crypto.randomUUID();

const uniquePath = () => `/files/${crypto.randomUUID()}`;
const seen = async (path: string) => (await (await fetch(`${origin}/headers?path=${encodeURIComponent(path)}`)).json()) as Record<string, string>;

afterEach(() => {
  delete env.ASSET_FETCH_ALLOW;
});

describe("header qualifiers", () => {
  it("send each header to the URIs it belongs to: http_header to all, bazel.auth_headers by URL, http_header_url by index", async () => {
    env.ASSET_FETCH_ALLOW = new URL(origin).host;
    const instanceName = uniqueInstance();
    const [a, b] = [uniquePath(), uniquePath()];
    const text = "with headers " + crypto.randomUUID();
    const uris = [`${origin}${a}?status=500`, `${origin}${b}?text=${encodeURIComponent(text)}`];
    const qualifiers = [
      { name: "http_header:X-All", value: "everyone" },
      { name: "bazel.auth_headers", value: JSON.stringify({ [uris[0]!]: { Authorization: [SECRET] }, "https://elsewhere.example/": { Authorization: "x" } }) },
      { name: "http_header_url:1:X-Token", value: "for b" },
      // URL-specific wins over every-URI.
      { name: "http_header_url:1:X-All", value: "b only" },
      // A header with two values comes as the same qualifier twice (Bazel 7+): both are sent.
      { name: "http_header_url:1:X-Multi", value: "one" },
      { name: "http_header_url:1:X-Multi", value: "two" },
    ];
    const r = await fetcher.fetchBlob({ instanceName, uris, qualifiers });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.uri).toBe(uris[1]);
    const [sa, sb] = [await seen(a), await seen(b)];
    expect(sa).toMatchObject({ "x-all": "everyone", authorization: SECRET });
    expect(sa["x-token"]).toBeUndefined();
    expect(sb).toMatchObject({ "x-all": "b only", "x-token": "for b", "x-multi": "one, two", "accept-encoding": "identity" });
    expect(sb.authorization).toBeUndefined();
    // Nothing of the headers is echoed or stored in the asset's record.
    expect(JSON.stringify(r.qualifiers)).not.toContain("X-");
    const records = (await env.CAS.list({ prefix: `asset/default/${encodeURIComponent(instanceName)}/` })).objects;
    expect(records).toHaveLength(1);
    const stored = await (await env.CAS.get(records[0]!.key))!.text();
    expect(stored).toContain(await sha256Hex(text));
    expect(stored).not.toMatch(/s3cret|for b|everyone|X-Token|Authorization/);
  });

  it("are dropped on a redirect to another origin (port), kept on a redirect within it", async () => {
    env.ASSET_FETCH_ALLOW = `${new URL(origin).host},${new URL(other).host}`;
    const [first, away, back, home] = [uniquePath(), uniquePath(), uniquePath(), uniquePath()];
    const text = "redirected " + crypto.randomUUID();
    // origin -> other (cross) -> origin again: once dropped, they stay dropped.
    const end = `${origin}${back}?text=${encodeURIComponent(text)}`;
    const uri = `${origin}${first}?redirect=${encodeURIComponent(`${other}${away}?redirect=${encodeURIComponent(end)}`)}`;
    const qualifiers = [
      { name: "http_header_url:0:Authorization", value: SECRET },
      { name: "http_header:Cookie", value: "session=1" },
      { name: "http_header:X-Custom", value: "c" },
    ];
    const r = await fetcher.fetchBlob({ uris: [uri], qualifiers });
    expect(r.blobDigest?.hash).toBe(await sha256Hex(text));
    expect(await seen(first)).toMatchObject({ authorization: SECRET, cookie: "session=1", "x-custom": "c" });
    for (const path of [away, back]) {
      const h = await seen(path);
      expect(h["accept-encoding"]).toBe("identity");
      expect([h.authorization, h.cookie, h["x-custom"]]).toEqual([undefined, undefined, undefined]);
    }
    const same = `${origin}${uniquePath()}?redirect=${encodeURIComponent(`${origin}${home}?text=same`)}`;
    await fetcher.fetchBlob({ uris: [same], qualifiers: [{ name: "http_header:Authorization", value: SECRET }] });
    expect((await seen(home)).authorization).toBe(SECRET);
  });

  it("do not keep a stored asset from answering (they are not part of its key)", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload("pushed " + crypto.randomUUID(), instanceName);
    const uri = `https://mirror.example/${crypto.randomUUID()}.tar.gz`;
    const canonical = { name: "bazel.canonical_id", value: uri };
    await pusher.pushBlob({ instanceName, uris: [uri], qualifiers: [canonical], blobDigest: blob });
    const r = await fetcher.fetchBlob({
      instanceName,
      uris: [uri],
      qualifiers: [
        canonical,
        { name: "bazel.auth_headers", value: JSON.stringify({ [uri]: { Authorization: SECRET } }) },
        { name: "http_header_url:0:Authorization", value: SECRET },
        { name: "http_header:X-Trace", value: "t" },
      ],
    });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.blobDigest).toMatchObject(blob);
    expect(r.qualifiers).toEqual([expect.objectContaining(canonical), expect.objectContaining({ name: "checksum.sri" })]);
  });

  it("refuse malformed ones with INVALID_ARGUMENT and a reason, never repeating the value", async () => {
    const cases: [string, string, RegExp][] = [
      ["bazel.auth_headers", `{"https://x/": {"Authorization": "${SECRET}"`, /not valid JSON/],
      ["bazel.auth_headers", `["${SECRET}"]`, /not a JSON object/],
      ["bazel.auth_headers", `{"https://x/": "${SECRET}"}`, /other than an object of headers/],
      ["bazel.auth_headers", `{"https://x/": {"Authorization": [1]}}`, /neither a string nor a list/],
      ["bazel.auth_headers", `{"https://x/": {"Bad Name": "${SECRET}"}}`, /invalid HTTP header "Bad Name"/],
      ["http_header_url:2:Authorization", SECRET, /uris\[2\]; the request has 2 URI/],
      ["http_header_url:x:Authorization", SECRET, /not http_header_url:<uri index>:<header name>/],
      ["http_header_url:0:", SECRET, /invalid HTTP header ""/],
      ["http_header:Bad:Name", SECRET, /invalid HTTP header "Bad:Name"/],
      ["http_header:X-Split", `${SECRET}\r\nX-Injected: 1`, /contains CR, LF or NUL/],
      ["http_header:Range", "bytes=0-1", /does not forward/],
      ["http_header:X-Euro", `${SECRET}\u20ac`, /outside Latin-1/],
    ];
    for (const [name, value, reason] of cases) {
      const err = await errorOf(fetcher.fetchBlob({ uris: ["urn:x:a", "urn:x:b"], qualifiers: [{ name, value }] }));
      expect(err.code, name).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(reason);
      expect(err.rawMessage).not.toContain("s3cret");
    }
  });
});
