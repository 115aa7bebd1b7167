// Following one operation from the worker: the OperationDO streams framed Operations; if that
// stream breaks before the operation is done (the object restarted), we attach again.
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Env } from "../env.ts";
import { OperationSchema, type Operation } from "../gen/google/longrunning/operations_pb.ts";
import { decodeFrames } from "./frames.ts";
import { operationStub } from "./operation-stub.ts";

const REATTACH_LIMIT = 20;

export const notFoundOperation = (name: string) =>
  new ConnectError(`operation ${name} not found (it expired, was deleted, or never existed); call Execute again`, Code.NotFound);

/** Yields the operation's current state, then each change, until it is done. */
export async function* watchOperation(env: Env, name: string, signal?: AbortSignal): AsyncGenerator<Operation> {
  for (let attempt = 0; attempt < REATTACH_LIMIT && !signal?.aborted; attempt++) {
    let stream: ReadableStream<Uint8Array> | null;
    try {
      // A fresh stub each time: one whose object was reset stays broken.
      stream = await operationStub(env, name).watch();
    } catch (e) {
      console.warn("operation did not answer, attaching again", name, e);
      await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 2000)));
      continue;
    }
    if (!stream) throw notFoundOperation(name);
    try {
      for await (const frame of decodeFrames(stream)) {
        const op = fromBinary(OperationSchema, frame);
        yield op;
        if (op.done) return;
      }
    } catch (e) {
      if (signal?.aborted) return;
      console.warn("operation stream broke, attaching again", name, e);
    }
    await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 2000)));
  }
  if (!signal?.aborted) throw new ConnectError(`lost the stream of ${name}; call WaitExecution`, Code.Unavailable);
}
