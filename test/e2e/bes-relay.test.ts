// The bridge's relay of PublishBuildToolEventStream (cli/bes-relay.ts) on its own, against a
// scripted upstream: acknowledgements come only after the worker's commit, in order; an upstream
// error ends the stream with its code; a batch the worker did not commit is never acknowledged.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createHandlerContext, type Transport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { relayBuildToolEvents } from "../../cli/bes-relay.ts";
import { streamFinishedRequest } from "../../src/bes/tool-stream.ts";
import { PublishBuildEvent, type PublishBuildToolEventStreamRequest } from "../../src/gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { IngestBuildToolEventsResponseSchema } from "../../src/gen/kiln/bes/v1/ingest_pb.ts";

const streamId = { buildId: "b", invocationId: "8e3c0e1a-9c1b-4f55-9d55-0d8a1f3c2b10", component: 2 };
const request = (seq: number) => streamFinishedRequest(streamId, seq);

/** A client stream the test writes to, one request at a time. */
function clientStream() {
  const queue: (PublishBuildToolEventStreamRequest | null)[] = [];
  let wake: (() => void) | undefined;
  return {
    send(r: PublishBuildToolEventStreamRequest | null) {
      queue.push(r);
      wake?.();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        const r = queue.shift()!;
        if (r === null) return;
        yield r;
      }
    },
  };
}

/** An upstream whose IngestBuildToolEvents answers are given by the test. */
function scriptedUpstream(log: string[]) {
  const calls: { seqs: bigint[]; answer: (committed: bigint) => void; fail: (e: Error) => void }[] = [];
  let called: (() => void) | undefined;
  const transport = {
    unary(_method: unknown, _signal: unknown, _timeout: unknown, _header: unknown, input: { requests: PublishBuildToolEventStreamRequest[] }) {
      return new Promise((resolve, reject) => {
        const seqs = input.requests.map((r) => r.orderedBuildEvent!.sequenceNumber);
        calls.push({
          seqs,
          answer: (committed) => {
            log.push(`commit ${committed}`);
            resolve({ message: create(IngestBuildToolEventsResponseSchema, { committedSequenceNumber: committed }) });
          },
          fail: reject,
        });
        called?.();
      });
    },
  } as unknown as Transport;
  return {
    transport,
    calls,
    async nextCall() {
      while (calls.length === 0) await new Promise<void>((resolve) => (called = resolve));
      return calls.shift()!;
    },
  };
}

const ctx = () =>
  createHandlerContext({
    service: PublishBuildEvent,
    method: PublishBuildEvent.method.publishBuildToolEventStream,
    protocolName: "grpc",
    requestMethod: "POST",
    url: "http://bridge/google.devtools.build.v1.PublishBuildEvent/PublishBuildToolEventStream",
    requestHeader: new Headers(),
  });

describe("the bridge's PublishBuildToolEventStream relay", () => {
  it("acknowledges each sequence number, in order, only after the worker committed it", async () => {
    const log: string[] = [];
    const upstream = scriptedUpstream(log);
    const client = clientStream();
    const acks = relayBuildToolEvents(upstream.transport)(client, ctx());
    const reading = (async () => {
      for await (const ack of acks) log.push(`ack ${ack.sequenceNumber}`);
      log.push("end");
    })();
    client.send(request(1));
    const first = await upstream.nextCall();
    expect(first.seqs).toEqual([1n]);
    client.send(request(2));
    client.send(request(3));
    client.send(null);
    first.answer(1n);
    // Requests 2 and 3 go in one call or two, depending on when the relay read them.
    const sent: bigint[] = [1n];
    while (sent.length < 3) {
      const call = await upstream.nextCall();
      sent.push(...call.seqs);
      call.answer(call.seqs.at(-1)!);
    }
    await reading;
    expect(sent).toEqual([1n, 2n, 3n]);
    expect(log.filter((l) => l.startsWith("ack"))).toEqual(["ack 1", "ack 2", "ack 3"]);
    // Every ack follows a commit that covers it.
    for (const [i, line] of log.entries()) {
      if (!line.startsWith("ack")) continue;
      const seq = Number(line.slice(4));
      expect(log.slice(0, i).some((l) => l.startsWith("commit") && Number(l.slice(7)) >= seq), line).toBe(true);
    }
    expect(log.at(-1)).toBe("end");
  });

  it("ends the stream with the worker's error and acknowledges nothing of that batch", async () => {
    const log: string[] = [];
    const upstream = scriptedUpstream(log);
    const client = clientStream();
    const acks = relayBuildToolEvents(upstream.transport)(client, ctx());
    const reading = (async () => {
      for await (const ack of acks) log.push(`ack ${ack.sequenceNumber}`);
    })();
    client.send(request(1));
    (await upstream.nextCall()).answer(1n);
    client.send(request(3));
    (await upstream.nextCall()).fail(new ConnectError("sequence_number 3 is out of order: the next one is 2", Code.FailedPrecondition));
    const e = await reading.then(() => null, (err: unknown) => ConnectError.from(err));
    expect(e?.code).toBe(Code.FailedPrecondition);
    expect(log).toEqual(["commit 1", "ack 1"]);
  });

  it("never acknowledges what the worker says it did not commit", async () => {
    const upstream = scriptedUpstream([]);
    const client = clientStream();
    const acks: bigint[] = [];
    const reading = (async () => {
      for await (const ack of relayBuildToolEvents(upstream.transport)(client, ctx())) acks.push(ack.sequenceNumber);
    })();
    client.send(request(1));
    client.send(request(2));
    const call = await upstream.nextCall();
    call.answer(call.seqs.length === 2 ? 1n : 0n);
    const e = await reading.then(() => null, (err: unknown) => ConnectError.from(err));
    expect(e?.code).toBe(Code.Internal);
    expect(acks.length).toBeLessThan(2);
    expect(acks.every((a) => a <= 1n)).toBe(true);
  });
});
