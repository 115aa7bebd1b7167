// Remote execution through the h2c bridge as a native gRPC client drives it, for e2e tests: real
// @grpc/grpc-js clients (proto-loader, no generated code) for Execution and Operations, inputs
// uploaded with BatchUpdateBlobs (messages encoded with the generated protobuf-es schemas), and
// the Operation stream of Execute / WaitExecution decoded.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import { expect } from "vitest";
import {
  ActionSchema,
  CommandSchema,
  DirectorySchema,
  ExecuteOperationMetadataSchema,
  ExecuteResponseSchema,
  ExecutionStage_Value,
  type ExecuteResponse,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { connect, digestOf, grpc, unary, type Client, type Clients, type Digest } from "./grpc-client.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const PATH_ENV = "/usr/local/bin:/usr/bin:/bin";

// ---- gRPC clients for Execution and Operations (grpc-client.ts has the cache services) ----

const definition = protoLoader.loadSync(
  ["build/bazel/remote/execution/v2/remote_execution.proto", "google/longrunning/operations.proto"],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [`${ROOT}proto`, `${ROOT}node_modules/google-proto-files`] },
);
const pkg = grpc.loadPackageDefinition(definition) as any;

export interface ExecClients extends Clients {
  execution: Client;
  operations: Client;
}

export function connectExec(target: string): ExecClients {
  const base = connect(target);
  const creds = grpc.credentials.createInsecure();
  const execution = new pkg.build.bazel.remote.execution.v2.Execution(target, creds) as Client;
  const operations = new pkg.google.longrunning.Operations(target, creds) as Client;
  return {
    ...base,
    execution,
    operations,
    close() {
      base.close();
      execution.close();
      operations.close();
    },
  };
}

// ---- actions ----

export const pd = (b: Uint8Array) => ({ hash: digestOf(b).hash, sizeBytes: BigInt(b.byteLength) });

export interface ActionSpec {
  /** A /bin/sh script. */
  script: string;
  /** Files of the input root; `false` content: listed in the Directory but never uploaded. */
  inputs?: Record<string, string | false>;
  timeoutSeconds?: number;
  /** Leave the Command out of the CAS. */
  skipCommand?: boolean;
}

interface Uploaded {
  digest: Digest;
  /** Digests of what was left out of the CAS on purpose. */
  missing: Digest[];
}

export async function putBlobs(c: Clients, instance: string, blobs: Uint8Array[]): Promise<void> {
  const res = await unary(c.cas, "BatchUpdateBlobs", {
    instance_name: instance,
    requests: blobs.map((data) => ({ digest: digestOf(data), data: Buffer.from(data) })),
  });
  for (const r of res.responses) expect(r.status?.code ?? 0, r.status?.message).toBe(0);
}

/** Uploads the input root, Command and Action (except what the spec leaves out). */
export async function putAction(c: Clients, instance: string, spec: ActionSpec): Promise<Uploaded> {
  const blobs: Uint8Array[] = [];
  const missing: Digest[] = [];
  const files = Object.entries(spec.inputs ?? { "input.txt": "input\n" })
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, content]) => {
      const bytes = Buffer.from(content === false ? `never uploaded ${randomUUID()}` : content);
      if (content === false) missing.push(digestOf(bytes));
      else blobs.push(bytes);
      return { name, digest: pd(bytes) };
    });
  const root = toBinary(DirectorySchema, create(DirectorySchema, { files }));
  const command = toBinary(
    CommandSchema,
    create(CommandSchema, { arguments: ["/bin/sh", "-c", spec.script], environmentVariables: [{ name: "PATH", value: PATH_ENV }] }),
  );
  const action = toBinary(
    ActionSchema,
    create(ActionSchema, {
      commandDigest: pd(command),
      inputRootDigest: pd(root),
      ...(spec.timeoutSeconds ? { timeout: { seconds: BigInt(spec.timeoutSeconds) } } : {}),
    }),
  );
  blobs.push(root, action);
  if (spec.skipCommand) missing.unshift(digestOf(command));
  else blobs.push(command);
  await putBlobs(c, instance, blobs);
  return { digest: digestOf(action), missing };
}

// ---- Execute streams ----

export interface Op {
  name: string;
  done: boolean;
  stage: string;
  response?: ExecuteResponse;
  /** ExecuteOperationMetadata.stdout_stream_name: the live stdout, readable with ByteStream Read. */
  stdoutStreamName: string;
}

export function decodeOp(raw: any): Op {
  expect(raw.error ?? null, "Operation.error must never be set").toBeNull();
  const meta = fromBinary(ExecuteOperationMetadataSchema, raw.metadata.value);
  return {
    name: raw.name,
    done: raw.done,
    stage: ExecutionStage_Value[meta.stage]!,
    response: raw.response ? fromBinary(ExecuteResponseSchema, raw.response.value) : undefined,
    stdoutStreamName: meta.stdoutStreamName,
  };
}

export interface Watch {
  call: grpc.ClientReadableStream<any>;
  ops: Op[];
  /** The first Operation that satisfies `pred` (already seen or still to come). */
  next(pred?: (op: Op) => boolean): Promise<Op>;
  /** Every Operation of the stream, once it ends; rejects with the call's error. */
  end: Promise<Op[]>;
}

export function watch(call: grpc.ClientReadableStream<any>): Watch {
  const ops: Op[] = [];
  const listeners = new Set<() => void>();
  let failure: unknown;
  let ended = false;
  const end = new Promise<Op[]>((resolve, reject) => {
    call.on("data", (raw) => {
      ops.push(decodeOp(raw));
      for (const l of listeners) l();
    });
    call.on("error", (e) => {
      failure = e;
      reject(e);
      for (const l of listeners) l();
    });
    call.on("end", () => {
      ended = true;
      resolve(ops);
      for (const l of listeners) l();
    });
  });
  end.catch(() => {}); // observed through next() or by awaiting end
  return {
    call,
    ops,
    end,
    next(pred = () => true) {
      return new Promise<Op>((resolve, reject) => {
        const check = () => {
          const hit = ops.find(pred);
          if (hit) return (listeners.delete(check), resolve(hit));
          if (failure || ended) (listeners.delete(check), reject(failure ?? new Error("the stream ended without such an Operation")));
        };
        listeners.add(check);
        check();
      });
    },
  };
}

export function execute(c: ExecClients, instance: string, digest: Digest, extra: object = {}): Watch {
  return watch(c.execution.Execute({ instance_name: instance, action_digest: digest, ...extra }));
}

export function waitExecution(c: ExecClients, name: string): Watch {
  return watch(c.execution.WaitExecution({ name }));
}

/** The final Operation of an ended stream: done, COMPLETED, with an ExecuteResponse. */
export async function finalOf(w: Watch): Promise<Op & { response: ExecuteResponse }> {
  const ops = await w.end;
  const last = ops.at(-1);
  expect(last?.done, "the stream ends with a done Operation").toBe(true);
  expect(last!.stage).toBe("COMPLETED");
  expect(last!.response).toBeDefined();
  return last as Op & { response: ExecuteResponse };
}

export async function readBlob(c: Clients, instance: string, d: { hash: string; sizeBytes: bigint } | undefined): Promise<string> {
  expect(d).toBeDefined();
  const res = await unary(c.cas, "BatchReadBlobs", { instance_name: instance, digests: [{ hash: d!.hash, size_bytes: String(d!.sizeBytes) }] });
  expect(res.responses[0].status?.code ?? 0).toBe(0);
  return Buffer.from(res.responses[0].data).toString("utf8");
}

