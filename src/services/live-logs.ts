// ByteStream.Read of a running action's live output (ExecuteOperationMetadata.stdout_stream_name
// and stderr_stream_name): the bytes held so far, then each append, until the attempt ends.
import type { HandlerContext } from "@connectrpc/connect";
import { notFound } from "../errors.ts";
import type { LogStreamRef } from "../execution/log-streams.ts";
import { authorizeOperation } from "./execution.ts";

export async function readLiveLog(ctx: HandlerContext, ref: LogStreamRef, offset: number, limit: number): Promise<ReadableStream<Uint8Array>> {
  const stub = await authorizeOperation(ctx, ref.operation, "read");
  const owner = await stub.owner();
  const stream = owner?.instanceName === ref.instanceName ? await stub.readLog(ref.attempt, ref.kind, offset) : null;
  if (!stream) throw notFound(`log stream ${ref.operation}/attempts/${ref.attempt}/${ref.kind} is not live (the attempt is over, or never started)`);
  if (!limit) return stream;
  let left = limit;
  return stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        if (left <= 0) return c.terminate();
        c.enqueue(chunk.subarray(0, left));
        left -= chunk.byteLength;
        if (left <= 0) c.terminate();
      },
    }),
  );
}
