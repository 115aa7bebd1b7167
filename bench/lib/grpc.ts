// @grpc/grpc-js clients for REAPI CAS and ByteStream, built from the .proto files at run time.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { MiB } from "./data.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

const definition = protoLoader.loadSync(
  ["build/bazel/remote/execution/v2/remote_execution.proto", "google/bytestream/bytestream.proto"],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [`${root}proto`, `${root}node_modules/google-proto-files`] },
);
const pkg = grpc.loadPackageDefinition(definition) as any;

export type Client = grpc.Client & Record<string, any>;

/**
 * What the client itself spends on one unary call's messages: serializing `req` and deserializing
 * `res` with the same generated codec the clients use (ms, median of `n`). Part of every latency
 * the bench measures through the bridge, and none of it is the server's.
 */
export function clientCodecMs(service: string, method: string, req: object, res: object, n = 15): number {
  const m = (definition[service] as Record<string, protoLoader.MethodDefinition<object, object>>)[method]!;
  const wire = m.responseSerialize(res);
  const times: number[] = [];
  for (let i = 0; i < n + 2; i++) {
    const s = performance.now();
    m.requestSerialize(req);
    m.responseDeserialize(wire);
    if (i >= 2) times.push(performance.now() - s);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}
export interface Digest {
  hash: string;
  size_bytes: string;
}

/**
 * `flowControlWindow`: the HTTP/2 receive window, per stream and per connection. grpc-js keeps
 * the protocol's 64 KiB unless told; grpc-java (Bazel) starts at 1 MiB and grows it.
 */
export function connect(target: string, flowControlWindow?: number) {
  const creds = grpc.credentials.createInsecure();
  const opts = {
    "grpc.max_receive_message_length": 64 * MiB,
    "grpc.max_send_message_length": 64 * MiB,
    ...(flowControlWindow ? { "grpc-node.flow_control_window": flowControlWindow } : {}),
  };
  const cas: Client = new pkg.build.bazel.remote.execution.v2.ContentAddressableStorage(target, creds, opts);
  const bytestream: Client = new pkg.google.bytestream.ByteStream(target, creds, opts);
  return { cas, bytestream, close: () => [cas, bytestream].forEach((c) => c.close()) };
}

export function unary<T = any>(client: Client, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](req, new grpc.Metadata(), { deadline: Date.now() + 300_000 }, (err: grpc.ServiceError | null, res: T) =>
      err ? reject(err) : resolve(res),
    );
  });
}

/** One ByteStream.Write of `chunks` (finish_write on the last), with backpressure. */
export function bsWrite(bs: Client, resource: string, chunks: Iterable<Uint8Array>): Promise<{ committed_size: string }> {
  return new Promise((resolve, reject) => {
    const call: grpc.ClientWritableStream<any> = bs.write(new grpc.Metadata(), { deadline: Date.now() + 600_000 }, (err: grpc.ServiceError | null, res: any) =>
      err ? reject(err) : resolve(res),
    );
    const it = chunks[Symbol.iterator]();
    let offset = 0;
    let first = true;
    let cur = it.next();
    const pump = () => {
      while (!cur.done) {
        const data = cur.value;
        const next = it.next();
        const msg = { resource_name: first ? resource : "", write_offset: String(offset), finish_write: !!next.done, data };
        first = false;
        offset += data.byteLength;
        cur = next;
        if (cur.done) return void call.end(msg);
        if (!call.write(msg)) return void call.once("drain", pump);
      }
    };
    pump();
  });
}

/** One ByteStream.Read; returns the bytes received, feeding each chunk to `onChunk` if given. */
export function bsRead(bs: Client, resource: string, onChunk?: (c: Buffer) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const call: grpc.ClientReadableStream<any> = bs.read({ resource_name: resource, read_offset: "0", read_limit: "0" });
    call.on("data", (m: { data: Buffer }) => {
      n += m.data.byteLength;
      onChunk?.(m.data);
    });
    call.on("error", reject);
    call.on("end", () => resolve(n));
  });
}

/**
 * The client's own ceiling for a ByteStream.Read of `size` bytes: a grpc-js server in this process
 * that streams them from memory (ReadResponses of 1 MiB, as the bridge sends) for any resource
 * name. No worker, no R2, no bridge: what a ByteStream download through Kiln could reach at best
 * with a grpc-js client on this machine.
 */
export async function memoryReadServer(size: number): Promise<{ target: string; close(): void }> {
  const chunk = Buffer.alloc(MiB, 7);
  const server = new grpc.Server();
  server.addService(pkg.google.bytestream.ByteStream.service, {
    read(call: grpc.ServerWritableStream<any, any>) {
      let sent = 0;
      const pump = () => {
        while (sent < size) {
          const n = Math.min(MiB, size - sent);
          sent += n;
          if (!call.write({ data: n === MiB ? chunk : chunk.subarray(0, n) })) return void call.once("drain", pump);
        }
        call.end();
      };
      pump();
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { target: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

export { grpc };
