// Remote Asset Fetch and Push when storage fails: an entry R2 cannot read or store is UNAVAILABLE
// with the reason (a fault to retry, never a NOT_FOUND answer that would send the client to the
// origin or fail its build), a directory whose tree the CAS index cannot walk likewise, and the
// removal of an expired entry is upkeep that never fails the Fetch it rides on. A download whose
// blob Kiln cannot store is UNAVAILABLE too, not a fetch failure that sends it to the next mirror.
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { env } from "cloudflare:test";
import { afterEach, describe, expect, inject, it } from "vitest";
import { Fetch, Push } from "../../src/gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { DirectorySchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { failingBucket, failingIndex, withBinding, type When } from "./fault-injection.ts";
import { connectClient, errorOf, sha256Hex, uniqueInstance, upload } from "./helpers.ts";

const fetcher = connectClient(Fetch);
const pusher = connectClient(Push);
const isEntry = (k: string) => k.startsWith("asset/");
const urn = () => `urn:kiln-test:${crypto.randomUUID()}`;

describe("Remote Asset with R2 failing", () => {
  for (const when of ["before", "after"] as When[]) {
    it(`a Push whose entry R2 fails to store ${when} it lands: UNAVAILABLE with the reason; pushed again, Fetch finds it`, async () => {
      const instanceName = uniqueInstance();
      const blob = await upload(`pushed ${crypto.randomUUID()}`, instanceName);
      const uri = urn();
      const err = await withBinding("CAS", failingBucket((op, k) => op === "put" && isEntry(k), when), () =>
        errorOf(pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob })),
      );
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the Remote Asset entry could not be stored \(injected: R2 put of asset\/.*\); retry/);
      await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob });
      const r = await fetcher.fetchBlob({ instanceName, uris: [uri] });
      expect(r.status?.code ?? 0).toBe(0);
      expect(r.blobDigest).toMatchObject(blob);
    });

    it(`a Fetch whose entry R2 fails to read ${when === "before" ? "from the start" : "mid-way"}: UNAVAILABLE with the reason, not NOT_FOUND`, async () => {
      const instanceName = uniqueInstance();
      const blob = await upload(`fetched ${crypto.randomUUID()}`, instanceName);
      const uri = urn();
      await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob });
      const err = await withBinding("CAS", failingBucket((op, k) => op === "get" && isEntry(k), when), () =>
        errorOf(fetcher.fetchBlob({ instanceName, uris: [uri] })),
      );
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the Remote Asset entry could not be read \(.*injected: R2 get of asset\/.*\); retry/);
      expect((await fetcher.fetchBlob({ instanceName, uris: [uri] })).blobDigest).toMatchObject(blob);
    });
  }

  it("an expired entry R2 fails to delete: the Fetch is still a plain miss, and the next one deletes it", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload(`expiring ${crypto.randomUUID()}`, instanceName);
    const uri = urn();
    await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, expireAt: timestampFromMs(Date.now() + 1000) });
    // The instance's entries (the default tenant: no API_KEYS here).
    const entries = async () => (await env.CAS.list({ prefix: `asset/default/${encodeURIComponent(instanceName)}/` })).objects.length;
    expect(await entries()).toBe(1);
    await new Promise((r) => setTimeout(r, 1100));
    const miss = await withBinding("CAS", failingBucket((op, k) => op === "delete" && isEntry(k)), () => fetcher.fetchBlob({ instanceName, uris: [uri] }));
    expect(miss.status?.code).toBe(Code.NotFound);
    expect(await entries()).toBe(1);
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri] })).status?.code).toBe(Code.NotFound);
    expect(await entries()).toBe(0);
  });
});

describe("Remote Asset racing itself", () => {
  it("a Push that lands while a Fetch drops the expired entry it read is kept", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload(`repushed ${crypto.randomUUID()}`, instanceName);
    const uri = urn();
    await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, expireAt: timestampFromMs(Date.now() + 500) });
    await new Promise((r) => setTimeout(r, 600));
    // The Fetch reads the expired entry; before it drops it, the same asset is pushed again.
    const real = env.CAS;
    let pushed = false;
    const racing = new Proxy(real, {
      get(t, prop: string) {
        const v = Reflect.get(t, prop) as unknown;
        if (typeof v !== "function") return v;
        return async (...args: unknown[]) => {
          const res = await Reflect.apply(v, t, args);
          if (prop === "get" && typeof args[0] === "string" && isEntry(args[0]) && !pushed && res) {
            pushed = true;
            // The expired entry as read, then the new Push lands before the Fetch acts on it.
            const old = res as R2ObjectBody;
            const text = await old.text();
            await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, expireAt: timestampFromMs(Date.now() + 3_600_000) });
            return { etag: old.etag, text: async () => text };
          }
          return res;
        };
      },
    });
    const miss = await withBinding("CAS", { ...env, CAS: racing } as typeof env, () => fetcher.fetchBlob({ instanceName, uris: [uri] }));
    expect(pushed).toBe(true);
    expect(miss.status?.code).toBe(Code.NotFound);
    const r = await fetcher.fetchBlob({ instanceName, uris: [uri] });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.blobDigest).toMatchObject(blob);
  });
});

describe("Remote Asset with the CAS index failing", () => {
  it("FetchDirectory whose tree cannot be walked: UNAVAILABLE with the reason, not NOT_FOUND", async () => {
    const instanceName = uniqueInstance();
    const file = await upload(`file ${crypto.randomUUID()}`, instanceName);
    const root = await upload(toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: "a.txt", digest: file }] })), instanceName);
    const uri = urn();
    await pusher.pushDirectory({ instanceName, uris: [uri], rootDirectoryDigest: root });
    const err = await withBinding("CAS_INDEX", failingIndex(["present", "smallBlob"], "before"), () =>
      errorOf(fetcher.fetchDirectory({ instanceName, uris: [uri] })),
    );
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(/injected: CAS index/);
    expect((await fetcher.fetchDirectory({ instanceName, uris: [uri] })).rootDirectoryDigest).toMatchObject(root);
  });
});

describe("FetchBlob from origin with Kiln's storage failing", () => {
  const origin = inject("assetOrigin");
  const hits = async (path: string) => Number(await (await fetch(`${origin}/hits?path=${encodeURIComponent(path)}`)).text());
  afterEach(() => {
    delete env.ASSET_FETCH_ALLOW;
  });

  it("R2 failing the CAS write: UNAVAILABLE with the reason, the next mirror is not tried; an origin breaking off is a status, and it is", async () => {
    env.ASSET_FETCH_ALLOW = new URL(origin).host;
    const text = `mirrored ${crypto.randomUUID()}`.repeat(150); // over 4 KiB: an R2 blob
    const [first, second] = [`/files/${crypto.randomUUID()}`, `/files/${crypto.randomUUID()}`];
    const q = `?text=${encodeURIComponent(text)}`;
    const err = await withBinding("CAS", failingBucket((op, k) => op === "put" && k.startsWith("cas/")), () =>
      errorOf(fetcher.fetchBlob({ instanceName: uniqueInstance(), uris: [`${origin}${first}${q}`, `${origin}${second}${q}`] })),
    );
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toMatch(/injected: R2 put of cas\//);
    expect([await hits(first), await hits(second)]).toEqual([1, 0]);
    const r = await fetcher.fetchBlob({ instanceName: uniqueInstance(), uris: [`${origin}${first}${q}&cut=1`, `${origin}${second}${q}`] });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.uri).toBe(`${origin}${second}${q}`);
    expect(r.blobDigest?.hash).toBe(await sha256Hex(text));
  });
});
