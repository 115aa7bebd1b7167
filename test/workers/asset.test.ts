// Remote Asset API (Fetch, Push) against the real worker and bindings. Origin downloads go to the
// scripted HTTP origin started by asset-origin-setup.ts, reached over loopback like any host.
import { create, toBinary } from "@bufbuild/protobuf";
import { base64Encode } from "@bufbuild/protobuf/wire";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { SELF, env, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, inject, it } from "vitest";
import { Fetch, Push } from "../../src/gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { ContentAddressableStorage, DirectorySchema, RequestMetadataSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { BadRequestSchema, PreconditionFailureSchema } from "../../src/gen/google/rpc/error_details_pb.ts";
import { CasIndex } from "../../src/storage/cas-index.ts";
import { bytes, connectClient, digestOf, errorOf, grpcWebClient, sha256Hex, uniqueInstance, upload } from "./helpers.ts";

const fetcher = connectClient(Fetch);
const pusher = connectClient(Push);
const origin = inject("assetOrigin");
const originHost = new URL(origin).host;

const sri = async (alg: "SHA-256" | "SHA-384" | "SHA-512", data: string | Uint8Array) =>
  `${alg.replace("-", "").toLowerCase()}-${btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest(alg, typeof data === "string" ? bytes(data) : data))))}`;
const hits = async (path: string) => Number(await (await fetch(`${origin}/hits?path=${encodeURIComponent(path)}`)).text());
const uniquePath = () => `/files/${crypto.randomUUID()}`;
const readBlob = async (instanceName: string, d: { hash: string; sizeBytes: bigint }) => {
  const r = await connectClient(ContentAddressableStorage).batchReadBlobs({ instanceName, digests: [d] });
  return new TextDecoder().decode(r.responses[0]!.data);
};

afterEach(() => {
  delete env.ASSET_FETCH_ALLOW;
});

describe("Push then Fetch", () => {
  it("maps every pushed URI to the blob, per instance, echoing qualifiers and expiry", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload("pushed " + crypto.randomUUID(), instanceName);
    const uris = [`urn:uuid:${crypto.randomUUID()}`, `https://mirror.example/${crypto.randomUUID()}`];
    const expireAt = timestampFromMs(Date.now() + 3_600_000);
    const qualifiers = [{ name: "bazel.canonical_id", value: "v1" }];
    await pusher.pushBlob({ instanceName, uris, qualifiers, blobDigest: blob, expireAt });
    for (const uri of uris) {
      const r = await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers });
      expect(r.status?.code ?? 0).toBe(0);
      expect(r.blobDigest).toMatchObject(blob);
      expect(r.uri).toBe(uri);
      expect(r.expiresAt?.seconds).toBe(expireAt.seconds);
      expect(r.qualifiers).toEqual(expect.arrayContaining([expect.objectContaining({ name: "bazel.canonical_id", value: "v1" })]));
    }
    // Another instance, or other qualifiers, is another asset.
    const urn = [uris[0]!];
    expect((await fetcher.fetchBlob({ instanceName: uniqueInstance(), uris: urn, qualifiers })).status?.code).toBe(Code.NotFound);
    expect((await fetcher.fetchBlob({ instanceName, uris: urn })).status?.code).toBe(Code.NotFound);
    expect((await fetcher.fetchBlob({ instanceName, uris: urn, qualifiers: [{ name: "bazel.canonical_id", value: "v2" }] })).status?.code).toBe(Code.NotFound);
    // An https URI that is not stored would be fetched from origin: not allowed here, so PERMISSION_DENIED.
    expect((await fetcher.fetchBlob({ instanceName, uris: [uris[1]!] })).status?.code).toBe(Code.PermissionDenied);
  });

  it("works over gRPC-web and REST (JSON) too", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload("surfaces " + crypto.randomUUID(), instanceName);
    const uri = `urn:kiln-test:${crypto.randomUUID()}`;
    await grpcWebClient(Push).pushBlob({ instanceName, uris: [uri], blobDigest: blob });
    expect((await grpcWebClient(Fetch).fetchBlob({ instanceName, uris: [uri] })).blobDigest?.hash).toBe(blob.hash);
    const rest = (method: string, body: object) =>
      SELF.fetch(`http://kiln/v1/${instanceName}/assets:${method}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const res = await rest("fetchBlob", { uris: [uri] });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { blobDigest: { hash: string } }).blobDigest.hash).toBe(blob.hash);
    const restUri = `urn:kiln-test:${crypto.randomUUID()}`;
    expect((await rest("pushBlob", { uris: [restUri], blobDigest: { hash: blob.hash, sizeBytes: String(blob.sizeBytes) } })).status).toBe(200);
    expect((await fetcher.fetchBlob({ instanceName, uris: [restUri] })).blobDigest?.hash).toBe(blob.hash);
    const refused = await rest("fetchBlob", { uris: [uri], qualifiers: [{ name: "nope", value: "" }] });
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { error: { status: string; details: { fieldViolations?: { field: string }[] }[] } };
    expect(body.error.status).toBe("INVALID_ARGUMENT");
    expect(body.error.details[0]?.fieldViolations?.[0]?.field).toBe("qualifiers.name");
  });

  it("PushDirectory then FetchDirectory; a directory with a missing file is refused", async () => {
    const instanceName = uniqueInstance();
    const file = await upload("file in dir " + crypto.randomUUID(), instanceName);
    const dir = toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: "a.txt", digest: file }] }));
    const root = await upload(dir, instanceName);
    const uri = `https://github.com/example/${crypto.randomUUID()}.git`;
    const qualifiers = [
      { name: "vcs.commit", value: "b5123b1bb2853393c7b9aa43236db924d7e32d61" },
      { name: "resource_type", value: "application/x-git" },
    ];
    await pusher.pushDirectory({ instanceName, uris: [uri], qualifiers, rootDirectoryDigest: root });
    const r = await fetcher.fetchDirectory({ instanceName, uris: [uri], qualifiers: [...qualifiers].reverse() });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.rootDirectoryDigest).toMatchObject(root);
    // Directories are kept by their tree: a blob, even under the same URI, is another asset.
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers })).status?.code).toBe(Code.NotFound);

    const ghost = await digestOf("never uploaded " + crypto.randomUUID());
    const broken = await upload(toBinary(DirectorySchema, create(DirectorySchema, { files: [{ name: "g", digest: ghost }] })), instanceName);
    const err = await errorOf(pusher.pushDirectory({ instanceName, uris: [uri + "2"], rootDirectoryDigest: broken }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.findDetails(PreconditionFailureSchema)[0]?.violations).toEqual([
      expect.objectContaining({ type: "MISSING", subject: `blobs/${ghost.hash}/${ghost.sizeBytes}` }),
    ]);
  });

  it("refuses a push of a blob not in the CAS (FAILED_PRECONDITION, MISSING)", async () => {
    const ghost = await digestOf("ghost " + crypto.randomUUID());
    const err = await errorOf(pusher.pushBlob({ instanceName: "", uris: ["urn:x:ghost"], blobDigest: ghost }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.findDetails(PreconditionFailureSchema)[0]?.violations[0]?.subject).toBe(`blobs/${ghost.hash}/${ghost.sizeBytes}`);
  });

  it("never answers with a blob that has left the CAS", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload("evicted " + crypto.randomUUID(), instanceName);
    const uri = `urn:x:${crypto.randomUUID()}`;
    await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob });
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri] })).blobDigest?.hash).toBe(blob.hash);
    await env.CAS_INDEX.get(env.CAS_INDEX.idFromName(`default:${blob.hash[0]}`)).remove([blob.hash]);
    await env.CAS.delete(`cas/default/${blob.hash}`);
    const r = await fetcher.fetchBlob({ instanceName, uris: [uri] });
    expect(r.status?.code).toBe(Code.NotFound);
    expect(r.blobDigest).toBeUndefined();
  });

  it("keeps tenants apart: another tenant's key does not see the asset", async () => {
    const a = "asset-tenant-a-0123456789abcdef012345";
    const b = "asset-tenant-b-0123456789abcdef012345";
    env.API_KEYS = JSON.stringify([
      { key: a, tenant: "ta", name: "a" },
      { key: b, tenant: "tb", name: "b" },
    ]);
    try {
      const auth = (k: string) => ({ authorization: `Bearer ${k}` });
      const data = bytes("tenant blob " + crypto.randomUUID());
      const blob = await digestOf(data);
      await connectClient(ContentAddressableStorage, auth(a)).batchUpdateBlobs({ instanceName: "", requests: [{ digest: blob, data }] });
      const uri = `urn:x:${crypto.randomUUID()}`;
      await connectClient(Push, auth(a)).pushBlob({ instanceName: "", uris: [uri], blobDigest: blob });
      expect((await connectClient(Fetch, auth(a)).fetchBlob({ instanceName: "", uris: [uri] })).blobDigest?.hash).toBe(blob.hash);
      expect((await connectClient(Fetch, auth(b)).fetchBlob({ instanceName: "", uris: [uri] })).status?.code).toBe(Code.NotFound);
      // Tenant b cannot push a's blob either: it is not in b's CAS.
      expect((await errorOf(connectClient(Push, auth(b)).pushBlob({ instanceName: "", uris: [uri], blobDigest: blob }))).code).toBe(Code.FailedPrecondition);
    } finally {
      delete env.API_KEYS;
    }
  });
});

describe("failures for Bazel", () => {
  it("are RPC errors when RequestMetadata names bazel (its downloader ignores the response status)", async () => {
    const md = toBinary(RequestMetadataSchema, create(RequestMetadataSchema, { toolDetails: { toolName: "bazel", toolVersion: "4.2.3" } }));
    const bazel = connectClient(Fetch, { "build.bazel.remote.execution.v2.requestmetadata-bin": base64Encode(md) });
    expect((await errorOf(bazel.fetchBlob({ uris: ["urn:x:nothing-here"] }))).code).toBe(Code.NotFound);
    expect((await errorOf(bazel.fetchBlob({ uris: [`${origin}${uniquePath()}?text=x`] }))).code).toBe(Code.PermissionDenied);
    expect((await errorOf(bazel.fetchDirectory({ uris: ["urn:x:nothing-here"] }))).code).toBe(Code.NotFound);
    // A content check that failed is not raised as ABORTED, which Bazel retries with a whole download each time.
    env.ASSET_FETCH_ALLOW = originHost;
    try {
      const path = uniquePath();
      const text = "tampered " + crypto.randomUUID();
      const e = await errorOf(bazel.fetchBlob({ uris: [`${origin}${path}?text=${encodeURIComponent(text)}`], qualifiers: [{ name: "checksum.sri", value: await sri("SHA-256", "expected " + text) }] }));
      expect([e.code, e.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringContaining("does not match checksum.sri")]);
      expect(await hits(path)).toBe(1);
    } finally {
      delete env.ASSET_FETCH_ALLOW;
    }
    // Anyone else gets the status inside the response, as the spec says.
    expect((await fetcher.fetchBlob({ uris: ["urn:x:nothing-here"] })).status?.code).toBe(Code.NotFound);
  });
});

describe("qualifiers", () => {
  it("refuses unknown names with a BadRequest naming each one, on Fetch and Push", async () => {
    const qualifiers = [
      { name: "git.ref", value: "main" },
      { name: "checksum.sri", value: "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
      { name: "x-custom", value: "1" },
    ];
    for (const call of [
      fetcher.fetchBlob({ uris: ["urn:x:q"], qualifiers }),
      fetcher.fetchDirectory({ uris: ["urn:x:q"], qualifiers }),
      pusher.pushBlob({ uris: ["urn:x:q"], qualifiers, blobDigest: await digestOf("") }),
    ]) {
      const err = await errorOf(call);
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations).toEqual([
        expect.objectContaining({ field: "qualifiers.name", description: '"git.ref" not supported' }),
        expect.objectContaining({ field: "qualifiers.name", description: '"x-custom" not supported' }),
      ]);
    }
  });

  it("refuses repeated names, malformed checksums, no URIs and a negative timeout", async () => {
    const bad = [
      { uris: ["urn:x:a"], qualifiers: [{ name: "resource_type", value: "a" }, { name: "resource_type", value: "b" }] },
      { uris: ["urn:x:a"], qualifiers: [{ name: "checksum.sri", value: "md5-abc" }] },
      { uris: ["urn:x:a"], qualifiers: [{ name: "checksum.sri", value: "sha256-dG9vIHNob3J0" }] },
      { uris: [] },
      { uris: ["not a uri"] },
      { uris: ["urn:x:a"], timeout: { seconds: -1n } },
    ];
    for (const req of bad) expect((await errorOf(fetcher.fetchBlob(req))).code).toBe(Code.InvalidArgument);
  });

  it("honours checksum.sri on pushed assets and refuses a push whose sha256 contradicts the blob", async () => {
    const instanceName = uniqueInstance();
    const text = "sri pushed " + crypto.randomUUID();
    const blob = await upload(text, instanceName);
    const uri = `urn:x:${crypto.randomUUID()}`;
    const sha512 = await sri("SHA-512", text);
    await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, qualifiers: [{ name: "checksum.sri", value: sha512 }] });
    const ok = async (value: string) => (await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers: [{ name: "checksum.sri", value }] })).status?.code ?? 0;
    expect(await ok(await sri("SHA-256", text))).toBe(0);
    expect(await ok(sha512)).toBe(0);
    expect(await ok(`${await sri("SHA-256", "other")} ${sha512}`)).toBe(0);
    expect(await ok(await sri("SHA-256", "other"))).toBe(Code.NotFound);
    expect(await ok(await sri("SHA-384", text))).toBe(Code.NotFound);
    const err = await errorOf(
      pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, qualifiers: [{ name: "checksum.sri", value: await sri("SHA-256", "other") }] }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
  });

  it("checks sha384 / sha512 checksum.sri claims against the pushed bytes: a false one is INVALID_ARGUMENT and binds nothing", async () => {
    const instanceName = uniqueInstance();
    for (const size of [1000, 10_000]) {
      // Small (kept in the index) and large (read back from R2).
      const data = crypto.getRandomValues(new Uint8Array(size));
      const blob = await upload(data, instanceName);
      const uri = `urn:x:${crypto.randomUUID()}`;
      const lie = await sri("SHA-384", "another text " + crypto.randomUUID());
      const sriOf = (value: string) => [{ name: "checksum.sri", value }];
      const err = await errorOf(pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, qualifiers: sriOf(lie) }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(/checksum.sri names no hash blob_digest/);
      const r = await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers: sriOf(lie) });
      expect(r.status?.code).toBe(Code.NotFound);
      expect(r.blobDigest).toBeUndefined();
      // A true claim is recorded, beside a false one of another algorithm (one hash must match, as SRI says).
      const truth = await sri("SHA-384", data);
      await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, qualifiers: sriOf(`${await sri("SHA-512", "not it")} ${truth}`) });
      expect((await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers: sriOf(truth) })).blobDigest).toMatchObject(blob);
      expect((await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers: sriOf(lie) })).status?.code).toBe(Code.NotFound);
      expect((await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers: sriOf(await sri("SHA-512", data)) })).blobDigest).toMatchObject(blob);
    }
  });

  it("refuses checksum.sri on PushDirectory: a tree has no bytes to check it against", async () => {
    const instanceName = uniqueInstance();
    const root = await upload(toBinary(DirectorySchema, create(DirectorySchema, {})), instanceName);
    const err = await errorOf(
      pusher.pushDirectory({ instanceName, uris: [`urn:x:${crypto.randomUUID()}`], rootDirectoryDigest: root, qualifiers: [{ name: "checksum.sri", value: await sri("SHA-256", "x") }] }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(/pushed directory/);
  });

  it("answers push-only qualifiers (vcs.*, directory) from pushes only, never from origin", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const path = uniquePath();
    const r = await fetcher.fetchBlob({ uris: [`${origin}${path}?text=hi`], qualifiers: [{ name: "vcs.branch", value: "main" }] });
    expect(r.status?.code).toBe(Code.NotFound);
    expect(r.status?.message).toMatch(/vcs.branch/);
    expect(await hits(path)).toBe(0);
  });
});

describe("expiry and age", () => {
  it("stops answering after expire_at; a new push moves it", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload("expiring " + crypto.randomUUID(), instanceName);
    const uri = `urn:x:${crypto.randomUUID()}`;
    await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, expireAt: timestampFromMs(Date.now() - 1000) });
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri] })).status?.code).toBe(Code.NotFound);
    expect((await env.CAS.list({ prefix: `asset/default/${encodeURIComponent(instanceName)}/` })).objects).toHaveLength(0);
    await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, expireAt: timestampFromMs(Date.now() + 60_000) });
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri] })).blobDigest?.hash).toBe(blob.hash);
  });

  it("answers expires_at no later than CAS eviction is sure to spare the blobs: the minimum lifetime from the fetch's touch", async () => {
    const HOUR = 3600_000;
    // Above the touch interval (1 h by default), as the index requires.
    const LIFE = 2 * HOUR;
    const instanceName = uniqueInstance();
    const text = "evictable " + crypto.randomUUID();
    const blob = await upload(text, instanceName);
    const uri = `urn:x:${crypto.randomUUID()}`;
    const push = (expireAtMs?: number) =>
      pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob, expireAt: expireAtMs === undefined ? undefined : timestampFromMs(expireAtMs) });
    const expiresAt = async (req: object = { instanceName, uris: [uri] }) => {
      const before = Date.now();
      const r = await fetcher.fetchBlob(req);
      expect(r.status?.code ?? 0).toBe(0);
      return { ms: r.expiresAt && timestampMs(r.expiresAt), before, after: Date.now() };
    };
    const soon = Date.now() + 10 * 60_000;
    // A CAS that never evicts: expire_at as pushed, or none.
    await push(Date.now() + 24 * HOUR);
    expect((await expiresAt()).ms).toBeGreaterThan(Date.now() + 23 * HOUR);
    env.CAS_MAX_IDLE_DAYS = "30";
    env.CAS_MIN_LIFETIME_HOURS = "2";
    try {
      const t = await expiresAt();
      expect(t.ms).toBeGreaterThanOrEqual(t.before + LIFE);
      expect(t.ms).toBeLessThanOrEqual(t.after + LIFE);
      await push(soon);
      expect((await expiresAt()).ms).toBe(soon);
      await push();
      const n = await expiresAt();
      expect(n.ms).toBeGreaterThanOrEqual(n.before + LIFE);
      expect(n.ms).toBeLessThanOrEqual(n.after + LIFE);
      // Answered from the CAS by sha256, with no asset stored: the same bound.
      env.ASSET_FETCH_ALLOW = originHost;
      const c = await expiresAt({ instanceName, uris: [`${origin}${uniquePath()}?text=x`], qualifiers: [{ name: "checksum.sri", value: await sri("SHA-256", text) }] });
      expect(c.ms).toBeGreaterThanOrEqual(c.before + LIFE);
      expect(c.ms).toBeLessThanOrEqual(c.after + LIFE);
    } finally {
      delete env.CAS_MAX_IDLE_DAYS;
      delete env.CAS_MIN_LIFETIME_HOURS;
    }
    expect((await expiresAt()).ms).toBeUndefined();
  });

  it("a download of a blob the CAS already holds touches it, as the expires_at bound assumes", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const text = "held already " + crypto.randomUUID();
    const blob = await upload(text);
    const shard = new CasIndex(env, "default").shard(blob.hash);
    const lastAccess = () =>
      runInDurableObject(shard, (_o, state) => state.storage.sql.exec<{ t: number }>(`SELECT last_access AS t FROM blobs WHERE hash = ?`, blob.hash).one().t);
    await runInDurableObject(shard, (_o, state) => void state.storage.sql.exec(`UPDATE blobs SET last_access = 0 WHERE hash = ?`, blob.hash));
    // No sha256 in checksum.sri: the staged path, which finds the blob present and does not write it.
    const r = await fetcher.fetchBlob({ uris: [`${origin}${uniquePath()}?text=${encodeURIComponent(text)}`], qualifiers: [{ name: "checksum.sri", value: await sri("SHA-512", text) }] });
    expect(r.blobDigest?.hash).toBe(blob.hash);
    expect(await lastAccess()).toBeGreaterThan(Date.now() - 60_000);
  });

  it("honours oldest_content_accepted against the push time", async () => {
    const instanceName = uniqueInstance();
    const blob = await upload("aged " + crypto.randomUUID(), instanceName);
    const uri = `urn:x:${crypto.randomUUID()}`;
    const before = Date.now() - 60_000;
    await pusher.pushBlob({ instanceName, uris: [uri], blobDigest: blob });
    const after = Date.now() + 60_000;
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri], oldestContentAccepted: timestampFromMs(before) })).blobDigest?.hash).toBe(blob.hash);
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri], oldestContentAccepted: timestampFromMs(after) })).status?.code).toBe(Code.NotFound);
  });
});

describe("FetchBlob from origin", () => {
  it("is refused by default: ASSET_FETCH_ALLOW unset means no host, and the origin is never contacted", async () => {
    const path = uniquePath();
    const r = await fetcher.fetchBlob({ uris: [`${origin}${path}?text=secret`] });
    expect(r.status?.code).toBe(Code.PermissionDenied);
    expect(r.status?.message).toMatch(/ASSET_FETCH_ALLOW/);
    expect(await hits(path)).toBe(0);
    env.ASSET_FETCH_ALLOW = "other.example, 10.0.0.1";
    expect((await fetcher.fetchBlob({ uris: [`${origin}${path}?text=secret`] })).status?.code).toBe(Code.PermissionDenied);
    expect(await hits(path)).toBe(0);
    // A bare host is its default ports only: another service on that host (the origin's port
    // here) needs host:port written out.
    env.ASSET_FETCH_ALLOW = new URL(origin).hostname;
    expect((await fetcher.fetchBlob({ uris: [`${origin}${path}?text=secret`] })).status?.code).toBe(Code.PermissionDenied);
    expect(await hits(path)).toBe(0);
    // A default port written out matches the URL that leaves it out (the download itself fails:
    // nothing answers there).
    env.ASSET_FETCH_ALLOW = "kiln-test.invalid:443";
    const pinned = await fetcher.fetchBlob({ uris: ["https://kiln-test.invalid/x.tar.gz"], timeout: { seconds: 5n } });
    expect(pinned.status?.code).not.toBe(Code.PermissionDenied);
    expect(pinned.status?.code).not.toBe(0);
  });

  it("answers a sha256 checksum.sri from a blob already in the CAS without downloading, unless resource_type is asked", async () => {
    const text = "already here " + crypto.randomUUID();
    await upload(text);
    const path = uniquePath();
    const uri = `${origin}${path}?text=${encodeURIComponent(text)}`;
    const qualifiers = [{ name: "checksum.sri", value: await sri("SHA-256", text) }];
    const r = await fetcher.fetchBlob({ uris: [uri], qualifiers });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.blobDigest?.hash).toBe(await sha256Hex(text));
    const typed = await fetcher.fetchBlob({ uris: [uri], qualifiers: [...qualifiers, { name: "resource_type", value: "text/plain" }] });
    expect(typed.status?.code).toBe(Code.PermissionDenied);
    expect(await hits(path)).toBe(0);
  });

  it("does not answer from the CAS by sha256 when bazel.canonical_id is given: it downloads, and an asset stored with that id answers", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const instanceName = uniqueInstance();
    const text = "canonical " + crypto.randomUUID();
    await upload(text, instanceName);
    const path = uniquePath();
    const uri = `${origin}${path}?text=${encodeURIComponent(text)}`;
    const qualifiers = [
      { name: "checksum.sri", value: await sri("SHA-256", text) },
      { name: "bazel.canonical_id", value: `${uri} v2` },
    ];
    const r = await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.blobDigest?.hash).toBe(await sha256Hex(text));
    expect(await hits(path)).toBe(1);
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers })).blobDigest?.hash).toBe(await sha256Hex(text));
    expect(await hits(path)).toBe(1);
  });

  it("downloads into the CAS with checksum.sri (sha256) verified, then answers from the asset cache", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const instanceName = uniqueInstance();
    const text = "from origin " + crypto.randomUUID();
    const path = uniquePath();
    const uri = `${origin}${path}?text=${encodeURIComponent(text)}`;
    const qualifiers = [{ name: "checksum.sri", value: await sri("SHA-256", text) }];
    const r = await fetcher.fetchBlob({ instanceName, uris: ["urn:x:unknown", uri], qualifiers });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.uri).toBe(uri);
    expect(r.blobDigest).toMatchObject({ hash: await sha256Hex(text), sizeBytes: BigInt(bytes(text).byteLength) });
    expect(await readBlob(instanceName, r.blobDigest!)).toBe(text);
    const again = await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers });
    expect(again.blobDigest?.hash).toBe(r.blobDigest?.hash);
    expect(await hits(path)).toBe(1);
    // A later oldest_content_accepted forces a new download.
    await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers, oldestContentAccepted: timestampFromMs(Date.now() + 60_000) });
    expect(await hits(path)).toBe(2);
  });

  it("verifies sha384 / sha512 SRI and bodies without Content-Length (staged path)", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const text = "staged " + crypto.randomUUID();
    for (const [alg, chunked] of [["SHA-384", ""], ["SHA-512", "&chunked=1"]] as const) {
      const uri = `${origin}${uniquePath()}?text=${encodeURIComponent(text)}${chunked}`;
      const r = await fetcher.fetchBlob({ uris: [uri], qualifiers: [{ name: "checksum.sri", value: await sri(alg, text) }] });
      expect(r.status?.code ?? 0).toBe(0);
      expect(r.blobDigest?.hash).toBe(await sha256Hex(text));
      expect(await readBlob("", r.blobDigest!)).toBe(text);
    }
  });

  it("matches a checksum.sri written without its base64 padding (valid SRI), from origin and from the asset cache", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const instanceName = uniqueInstance();
    const text = "unpadded " + crypto.randomUUID();
    const path = uniquePath();
    const uri = `${origin}${path}?text=${encodeURIComponent(text)}`;
    const sha512 = await sri("SHA-512", text);
    expect(sha512).toMatch(/==$/);
    const qualifiers = [{ name: "checksum.sri", value: sha512.replace(/=+$/, "") }];
    const r = await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.blobDigest?.hash).toBe(await sha256Hex(text));
    expect((await fetcher.fetchBlob({ instanceName, uris: [uri], qualifiers })).blobDigest?.hash).toBe(await sha256Hex(text));
    expect(await hits(path)).toBe(1);
  });

  it("answers ABORTED on a checksum mismatch and stores nothing", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    for (const alg of ["SHA-256", "SHA-512"] as const) {
      const text = "tampered " + crypto.randomUUID();
      const uri = `${origin}${uniquePath()}?text=${encodeURIComponent(text)}`;
      const r = await fetcher.fetchBlob({ uris: [uri], qualifiers: [{ name: "checksum.sri", value: await sri(alg, "expected " + text) }] });
      expect(r.status?.code).toBe(Code.Aborted);
      expect(r.blobDigest).toBeUndefined();
      const missing = await connectClient(ContentAddressableStorage).findMissingBlobs({ blobDigests: [await digestOf(text)] });
      expect(missing.missingBlobDigests).toHaveLength(1);
      expect((await fetcher.fetchBlob({ uris: [uri] })).status?.code).toBe(0);
    }
    const staged = await env.CAS.list({ prefix: "asset-staging/" });
    expect(staged.objects).toHaveLength(0);
  });

  it("streams a large body (24 MiB) into the CAS", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const size = 24 * 1024 * 1024;
    const data = new Uint8Array(size).fill(7);
    const digest = await digestOf(data);
    const uri = `${origin}${uniquePath()}?repeat=${size}&byte=7`;
    for (const qualifiers of [[], [{ name: "checksum.sri", value: `sha256-${btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", data))))}` }]]) {
      const r = await fetcher.fetchBlob({ uris: [uri], qualifiers, oldestContentAccepted: timestampFromMs(Date.now()) });
      expect(r.status?.code ?? 0).toBe(0);
      expect(r.blobDigest).toMatchObject(digest);
    }
  });

  it("maps origin failures to statuses: 404 NOT_FOUND, 500 UNAVAILABLE, resource_type mismatch ABORTED, timeout DEADLINE_EXCEEDED", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const code = async (query: string, extra: object = {}) =>
      (await fetcher.fetchBlob({ uris: [`${origin}${uniquePath()}?${query}`], ...extra })).status?.code ?? 0;
    expect(await code("status=404")).toBe(Code.NotFound);
    expect(await code("status=500")).toBe(Code.Unavailable);
    expect(await code("text=x&type=text/plain", { qualifiers: [{ name: "resource_type", value: "application/zip" }] })).toBe(Code.Aborted);
    expect(await code("text=x&type=text/plain", { qualifiers: [{ name: "resource_type", value: "text/plain" }] })).toBe(0);
    expect(await code("hang=1", { timeout: { nanos: 200_000_000 } })).toBe(Code.DeadlineExceeded);
  });

  it("gives each URI its share of the timeout to answer in: a first mirror that hangs does not starve the next", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const text = "second mirror " + crypto.randomUUID();
    const [hang, good] = [uniquePath(), uniquePath()];
    const second = `${origin}${good}?text=${encodeURIComponent(text)}`;
    const r = await fetcher.fetchBlob({ uris: [`${origin}${hang}?hang=1`, second], timeout: { nanos: 800_000_000 } });
    expect(r.status?.code ?? 0).toBe(0);
    expect(r.uri).toBe(second);
    expect(r.blobDigest?.hash).toBe(await sha256Hex(text));
    expect([await hits(hang), await hits(good)]).toEqual([1, 1]);
    // Every mirror hanging: each is asked, and the answer is DEADLINE_EXCEEDED.
    const [h1, h2] = [uniquePath(), uniquePath()];
    const all = await fetcher.fetchBlob({ uris: [`${origin}${h1}?hang=1`, `${origin}${h2}?hang=1`], timeout: { nanos: 400_000_000 } });
    expect(all.status?.code).toBe(Code.DeadlineExceeded);
    expect([await hits(h1), await hits(h2)]).toEqual([1, 1]);
    // Bazel sets no `timeout`, only the call's deadline: the shares are of that.
    const [h3, good3] = [uniquePath(), uniquePath()];
    const third = `${origin}${good3}?text=${encodeURIComponent(text)}`;
    const byDeadline = await fetcher.fetchBlob({ uris: [`${origin}${h3}?hang=1`, third] }, { timeoutMs: 3000 });
    expect(byDeadline.status?.code ?? 0).toBe(0);
    expect(byDeadline.uri).toBe(third);
    expect([await hits(h3), await hits(good3)]).toEqual([1, 1]);
  });

  it("follows redirects only to allowed hosts", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const text = "redirected " + crypto.randomUUID();
    const target = `${origin}${uniquePath()}?text=${encodeURIComponent(text)}`;
    const ok = await fetcher.fetchBlob({ uris: [`${origin}${uniquePath()}?redirect=${encodeURIComponent(target)}`] });
    expect(ok.blobDigest?.hash).toBe(await sha256Hex(text));
    const away = await fetcher.fetchBlob({ uris: [`${origin}${uniquePath()}?redirect=${encodeURIComponent("http://elsewhere.invalid/x")}`] });
    expect(away.status?.code).toBe(Code.PermissionDenied);
  });

  it("needs write access to download, read access for cached assets", async () => {
    env.ASSET_FETCH_ALLOW = originHost;
    const rw = "asset-rw-key-0123456789abcdef0123456";
    const ro = "asset-ro-key-0123456789abcdef0123456";
    env.API_KEYS = JSON.stringify([
      { key: rw, name: "rw" },
      { key: ro, name: "ro", access: "read" },
    ]);
    try {
      const text = "permission " + crypto.randomUUID();
      const path = uniquePath();
      const uri = `${origin}${path}?text=${encodeURIComponent(text)}`;
      const roFetch = connectClient(Fetch, { authorization: `Bearer ${ro}` });
      expect((await errorOf(roFetch.fetchBlob({ uris: [uri] }))).code).toBe(Code.PermissionDenied);
      expect(await hits(path)).toBe(0);
      expect((await errorOf(connectClient(Push, { authorization: `Bearer ${ro}` }).pushBlob({ uris: [uri], blobDigest: await digestOf("") }))).code).toBe(
        Code.PermissionDenied,
      );
      expect((await connectClient(Fetch, { authorization: `Bearer ${rw}` }).fetchBlob({ uris: [uri] })).status?.code ?? 0).toBe(0);
      expect((await roFetch.fetchBlob({ uris: [uri] })).blobDigest?.hash).toBe(await sha256Hex(text));
    } finally {
      delete env.API_KEYS;
    }
  });
});
