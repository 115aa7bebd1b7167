// Shared test helpers: Connect and gRPC-web clients that reach the worker through SELF.
import { SELF, env, runInDurableObject } from "cloudflare:test";
import { createRegistry, type DescService } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import type { UniversalClientFn } from "@connectrpc/connect/protocol";
import { createTransport as createGrpcWebProtocolTransport } from "@connectrpc/connect/protocol-grpc-web";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { CasIndex } from "../../src/storage/cas-index.ts";
import { file_google_rpc_error_details } from "../../src/gen/google/rpc/error_details_pb.ts";

const errorDetails = createRegistry(file_google_rpc_error_details);

// connect-web asks for redirect: "error", which workerd rejects.
const selfFetch = ((input: RequestInfo | URL, init?: RequestInit) =>
  SELF.fetch(input as string, { ...init, redirect: "manual" })) as typeof fetch;

export function connectClient<S extends DescService>(service: S, headers?: Record<string, string>): Client<S> {
  return createClient(
    service,
    createConnectTransport({
      baseUrl: "http://kiln",
      fetch: selfFetch,
      // Statuses inside messages (batch responses) carry error details as Any.
      jsonOptions: { registry: errorDetails },
      interceptors: headers ? [headerInterceptor(headers)] : [],
    }),
  );
}

/**
 * gRPC-web with streaming request bodies (connect-web's fetch transport refuses client streams),
 * so ByteStream.Write is exercised exactly as the bridge sends it.
 */
const streamingHttpClient: UniversalClientFn = async (req) => {
  const body = req.body
    ? new ReadableStream<Uint8Array>({
        async start(ctl) {
          try {
            for await (const chunk of req.body!) ctl.enqueue(chunk);
          } catch {
            // The client gave up (usually: the server already answered); end the body quietly.
          }
          ctl.close();
        },
      })
    : undefined;
  const res = await SELF.fetch(req.url, { method: req.method, headers: req.header, body, signal: req.signal });
  return {
    status: res.status,
    header: res.headers,
    trailer: new Headers(),
    body: iterate(res.body ?? new Blob([]).stream()),
  };
};

// Connect's stream helpers need a full async generator (with throw), not a stream's iterator.
async function* iterate(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

export function grpcWebClient<S extends DescService>(service: S, headers?: Record<string, string>): Client<S> {
  return createClient(
    service,
    createGrpcWebProtocolTransport({
      httpClient: streamingHttpClient,
      baseUrl: "http://kiln",
      useBinaryFormat: true,
      interceptors: headers ? [headerInterceptor(headers)] : [],
      acceptCompression: [],
      sendCompression: null,
      compressMinBytes: 1024,
      readMaxBytes: 64 * 1024 * 1024,
      writeMaxBytes: 64 * 1024 * 1024,
    }),
  );
}

const headerInterceptor =
  (headers: Record<string, string>): Interceptor =>
  (next) =>
  (req) => {
    for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
    return next(req);
  };

export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const d = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function digestOf(data: Uint8Array | string) {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return { hash: await sha256Hex(bytes), sizeBytes: BigInt(bytes.byteLength) };
}

export const bytes = (s: string) => new TextEncoder().encode(s);

/** Stores a blob through BatchUpdateBlobs; its digest. */
export async function upload(data: Uint8Array | string, instanceName = "") {
  const b = typeof data === "string" ? bytes(data) : data;
  const d = await digestOf(b);
  await connectClient(ContentAddressableStorage).batchUpdateBlobs({ instanceName, requests: [{ digest: d, data: b }] });
  return d;
}

/** Deterministic pseudo-random bytes (xorshift), so big blobs need no fixtures. */
export function pseudoRandom(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
    out[i + 1] = (x >>> 8) & 0xff;
    out[i + 2] = (x >>> 16) & 0xff;
    out[i + 3] = (x >>> 24) & 0xff;
  }
  return out;
}

/** A unique instance name per test, so tests do not see each other's action-cache entries. */
export const uniqueInstance = (prefix = "t") => `${prefix}/${crypto.randomUUID().slice(0, 8)}`;

/** The status code a call ends with ("ok" if it succeeds). */
export async function codeOf(p: Promise<unknown>) {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e).code;
  }
  return "ok";
}

/** The error a call must end with. */
export async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

/** The hashes a tenant's CAS index records, shard by shard (small blobs are stored there alone). */
export async function casIndexRows(tenant = "default"): Promise<string[]> {
  const rows = await Promise.all(
    new CasIndex(env, tenant).allShards().map(({ stub }) =>
      runInDurableObject(stub, (_o, state) => state.storage.sql.exec<{ hash: string }>(`SELECT hash FROM blobs`).toArray().map((r) => r.hash)),
    ),
  );
  return rows.flat();
}

/** Whether the CAS holds anything under `hash`: an R2 object, or a row in its index shard (where small blobs are kept). */
export async function casHolds(hash: string, tenant = "default"): Promise<boolean> {
  if (await env.CAS.head(`cas/${tenant}/${hash}`)) return true;
  return runInDurableObject(new CasIndex(env, tenant).shard(hash), (_o, state) =>
    state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM blobs WHERE hash = ?`, hash).one().n > 0,
  );
}

