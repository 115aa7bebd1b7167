// ReadFramer: the ReadResponse frames the bridge and the worker write around a blob's chunks
// decode, as any gRPC client decodes them, to the blob's bytes, in messages no larger than
// READ_MESSAGE_BYTES.
import { randomBytes } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ReadResponseSchema } from "../src/gen/google/bytestream/bytestream_pb.ts";
import { messagesOf } from "./grpc-web-frames.ts";
import { READ_MESSAGE_BYTES, ReadFramer, readResponseHead } from "../src/shared/read-framing.ts";

/** Frames `blob` arriving in pieces cut at `cuts`; returns the data of each decoded message. */
function frameAndDecode(blob: Buffer, cuts: number[], knownLength = true): Buffer[] {
  const f = new ReadFramer(knownLength ? blob.byteLength : undefined);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const to of [...cuts, blob.byteLength]) {
    out.push(...f.push(blob.subarray(from, to)));
    from = to;
  }
  expect(f.owed).toBe(0);
  const messages = messagesOf(Buffer.concat(out));
  expect(messages).toBeDefined();
  return messages!.map((m) => Buffer.from(fromBinary(ReadResponseSchema, m).data));
}

describe("ReadFramer", () => {
  it("frames a blob in messages of at most READ_MESSAGE_BYTES, whatever chunks it arrives in", () => {
    const blob = randomBytes(2 * READ_MESSAGE_BYTES + 12_345);
    for (const cuts of [[], [1], [65_536, 131_072, READ_MESSAGE_BYTES - 1, READ_MESSAGE_BYTES + 1], [READ_MESSAGE_BYTES, 2 * READ_MESSAGE_BYTES]]) {
      const data = frameAndDecode(blob, cuts);
      expect(Buffer.concat(data).equals(blob)).toBe(true);
      expect(data.map((d) => d.byteLength)).toEqual([READ_MESSAGE_BYTES, READ_MESSAGE_BYTES, 12_345]);
    }
  });

  it("frames each chunk on its own when the length is unknown", () => {
    const blob = randomBytes(1000);
    const data = frameAndDecode(blob, [1, 200, 999], false);
    expect(data.map((d) => d.byteLength)).toEqual([1, 199, 799, 1]);
    expect(Buffer.concat(data).equals(blob)).toBe(true);
  });

  it("says how many bytes a cut-short body still owes", () => {
    const f = new ReadFramer(100);
    f.push(Buffer.alloc(60));
    expect(f.owed).toBe(40);
  });

  it("writes lengths that need one to four varint bytes", () => {
    for (const n of [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
      const head = readResponseHead(n);
      const msg = fromBinary(ReadResponseSchema, Buffer.concat([head.subarray(5), Buffer.alloc(n, 1)]));
      expect(msg.data.byteLength).toBe(n);
      expect(Buffer.from(head).readUInt32BE(1)).toBe(head.byteLength - 5 + n);
    }
  });
});
