// Real @grpc/grpc-js clients for REAPI and ByteStream, built from the .proto files at run time
// with @grpc/proto-loader (no generated code): what a third-party client would do.
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import fs from "node:fs";

const root = fileURLToPath(new URL("../../", import.meta.url));
const includeDirs = [`${root}proto`, `${root}node_modules/google-proto-files`];

const loaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs,
};

const definition = protoLoader.loadSync(
  ["build/bazel/remote/execution/v2/remote_execution.proto", "google/bytestream/bytestream.proto"],
  loaderOptions,
);
const pkg = grpc.loadPackageDefinition(definition) as any;
const reapi = pkg.build.bazel.remote.execution.v2;

export type Client = grpc.Client & Record<string, any>;

export interface Clients {
  cas: Client;
  ac: Client;
  caps: Client;
  bytestream: Client;
  close(): void;
}

export function connect(target: string): Clients {
  const creds = grpc.credentials.createInsecure();
  // grpc-js defaults, as Bazel's: responses over 4 MiB are refused by the client.
  const opts = {};
  const cas = new reapi.ContentAddressableStorage(target, creds, opts);
  const ac = new reapi.ActionCache(target, creds, opts);
  const caps = new reapi.Capabilities(target, creds, opts);
  const bytestream = new pkg.google.bytestream.ByteStream(target, creds, opts);
  return {
    cas,
    ac,
    caps,
    bytestream,
    close() {
      for (const c of [cas, ac, caps, bytestream]) c.close();
    },
  };
}

/** Metadata with `authorization: Bearer KEY` (or empty). */
export function auth(key?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (key) md.set("authorization", `Bearer ${key}`);
  return md;
}

/** Promise wrapper over a unary grpc-js method. */
export function unary<T = any>(client: Client, method: string, req: object, md: grpc.Metadata = new grpc.Metadata()): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](req, md, { deadline: Date.now() + 120_000 }, (err: grpc.ServiceError | null, res: T) =>
      err ? reject(err) : resolve(res),
    );
  });
}

/** Collects every message of a server-streaming call. */
export function serverStream<T = any>(client: Client, method: string, req: object, md: grpc.Metadata = new grpc.Metadata()): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    const call: grpc.ClientReadableStream<T> = client[method](req, md);
    call.on("data", (m: T) => out.push(m));
    call.on("error", reject);
    call.on("end", () => resolve(out));
  });
}

/** The gRPC status code a promise rejects with (or "OK"). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (e) {
    const code = (e as grpc.ServiceError).code;
    if (typeof code !== "number") throw e;
    return grpc.status[code]!;
  }
}

/** The rejection of a promise, as a grpc ServiceError; throws if it resolves. */
export async function errorOf(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error("expected the call to fail, it succeeded");
}

export const statusName = (code: number) => grpc.status[code];

export const sha256 = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

export interface Digest {
  hash: string;
  size_bytes: string;
}

export const digestOf = (b: Uint8Array): Digest => ({ hash: sha256(b), size_bytes: String(b.byteLength) });

// Messages stored in the CAS (Directory, Tree, ActionResult) are encoded with protobufjs over the
// same .proto files (proto-loader is built on it).
const pbRoot = new protobuf.Root();
pbRoot.resolvePath = (_origin: string, target: string) => {
  for (const dir of includeDirs) {
    if (fs.existsSync(`${dir}/${target}`)) return `${dir}/${target}`;
  }
  return target;
};
pbRoot.loadSync(["build/bazel/remote/execution/v2/remote_execution.proto"], { keepCase: true });

/** Encodes a message of the schema by full name (keepCase field names, e.g. size_bytes). */
export function encode(name: string, obj: object): Uint8Array {
  const t = pbRoot.lookupType(name);
  return t.encode(t.fromObject(obj)).finish();
}

export interface SmallWrite {
  call: grpc.ClientWritableStream<object>;
  response: Promise<{ committed_size: string }>;
}

/** A Write of `blob` in two messages; `finish: false` closes the stream after the first without finish_write. */
export function writeSmall(bs: Client, resource: string, blob: Uint8Array, md = new grpc.Metadata(), finish = true): SmallWrite {
  let call!: grpc.ClientWritableStream<object>;
  const response = new Promise<{ committed_size: string }>((resolve, reject) => {
    call = bs.write(md, { deadline: Date.now() + 60_000 }, (err: grpc.ServiceError | null, res: { committed_size: string }) => (err ? reject(err) : resolve(res)));
  });
  response.catch(() => {}); // inspected by the test
  const half = blob.byteLength >> 1;
  call.write({ resource_name: resource, write_offset: "0", data: blob.subarray(0, half) });
  if (finish) call.write({ write_offset: String(half), data: blob.subarray(half), finish_write: true });
  call.end();
  return { call, response };
}

export { grpc };
