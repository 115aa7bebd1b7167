// Bazel's PublishBuildToolEventStream through the bridge. The stream is bidirectional, which the
// HTTP/1.1 hop to the worker cannot carry, so the bridge holds it: it reads Bazel's requests as
// they come, sends whatever has queued up as one kiln.bes.v1 IngestBuildToolEvents call (the
// worker commits a batch whole, or not at all), and acknowledges to Bazel each sequence number,
// in order, only once the worker has committed it. If the stream breaks, Bazel resends everything
// not yet acknowledged on a new stream; the worker skips what it had already committed.
import type { MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type Transport } from "@connectrpc/connect";
import type {
  PublishBuildToolEventStreamRequest,
  PublishBuildToolEventStreamResponseSchema,
} from "../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { BuildEventIngest } from "../src/gen/kiln/bes/v1/ingest_pb.ts";
import { BATCH_BYTES, BATCH_EVENTS, eventBytes } from "../src/bes/tool-stream.ts";
import { forwardedMetadata } from "./metadata.ts";

type Ack = MessageShape<typeof PublishBuildToolEventStreamResponseSchema>;

/** Requests read from the client, waiting to be sent; `ended` once the client half-closed. */
class Inbox {
  readonly items: PublishBuildToolEventStreamRequest[] = [];
  ended = false;
  failure: unknown;
  private wake: (() => void) | undefined;

  constructor(requests: AsyncIterable<PublishBuildToolEventStreamRequest>) {
    void (async () => {
      try {
        for await (const r of requests) {
          this.items.push(r);
          this.notify();
        }
      } catch (e) {
        this.failure = e;
      }
      this.ended = true;
      this.notify();
    })();
  }

  private notify() {
    this.wake?.();
    this.wake = undefined;
  }

  /** Resolves once there is something to send or nothing more will come. */
  async ready(): Promise<void> {
    while (this.items.length === 0 && !this.ended) await new Promise<void>((resolve) => (this.wake = resolve));
  }

  take(): PublishBuildToolEventStreamRequest[] {
    let bytes = 0;
    let n = 0;
    while (n < this.items.length && n < BATCH_EVENTS) {
      bytes += eventBytes(this.items[n]!);
      if (n > 0 && bytes > BATCH_BYTES) break;
      n++;
    }
    return this.items.splice(0, n);
  }
}

export function relayBuildToolEvents(upstream: Transport) {
  return async function* (requests: AsyncIterable<PublishBuildToolEventStreamRequest>, ctx: HandlerContext): AsyncGenerator<Ack> {
    const inbox = new Inbox(requests);
    const headers = forwardedMetadata(ctx.requestHeader);
    for (;;) {
      await inbox.ready();
      if (inbox.failure) throw inbox.failure;
      const batch = inbox.take();
      if (batch.length === 0) return; // the client half-closed and everything is acknowledged
      const res = await upstream.unary(BuildEventIngest.method.ingestBuildToolEvents, ctx.signal, ctx.timeoutMs(), headers, { requests: batch });
      const committed = res.message.committedSequenceNumber;
      for (const r of batch) {
        const seq = r.orderedBuildEvent?.sequenceNumber ?? 0n;
        if (seq > committed) throw new ConnectError(`the worker did not commit sequence number ${seq} (committed: ${committed})`, Code.Internal);
        yield { $typeName: "google.devtools.build.v1.PublishBuildToolEventStreamResponse", streamId: r.orderedBuildEvent?.streamId, sequenceNumber: seq };
      }
    }
  };
}
