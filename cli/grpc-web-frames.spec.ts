// The frame splitter passes message frames on byte for byte and takes out the trailer frame,
// however the body is cut into chunks (frame headers included).
import { describe, expect, it } from "vitest";
import { trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { frameHeader, messagesOf, TrailerSplitter } from "./grpc-web-frames.ts";

const frame = (payload: Buffer) => Buffer.concat([frameHeader(payload.byteLength), payload]);
const trailerFrame = (h: Headers) => {
  const t = Buffer.from(trailerSerialize(h));
  const head = frameHeader(t.byteLength);
  head[0] = 0x80;
  return Buffer.concat([head, t]);
};

/** Feeds `body` to a splitter in pieces cut at `cuts`; returns what it passed on and the trailers. */
function split(body: Buffer, cuts: number[]) {
  const s = new TrailerSplitter();
  const out: Buffer[] = [];
  let from = 0;
  for (const to of [...cuts, body.byteLength]) {
    out.push(...s.push(body.subarray(from, to)));
    from = to;
  }
  return { passed: Buffer.concat(out), trailers: s.trailers, cutShort: s.cutShort };
}

describe("TrailerSplitter", () => {
  const messages = Buffer.concat([frame(Buffer.from("hello")), frame(Buffer.alloc(0)), frame(Buffer.alloc(70_000, 7))]);
  const trailers = new Headers({ "grpc-status": "3", "grpc-message": "bad%20thing", "grpc-status-details-bin": "CAM" });
  const body = Buffer.concat([messages, trailerFrame(trailers)]);

  it("passes the message frames on unchanged and parses the trailers, in one chunk", () => {
    const r = split(body, []);
    expect(r.passed.equals(messages)).toBe(true);
    expect(Object.fromEntries(r.trailers!)).toEqual(Object.fromEntries(trailers));
    expect(r.cutShort).toBe(false);
  });

  it("does the same with the body cut at every byte up to past the first frames, and at random", () => {
    for (let cut = 1; cut < 40; cut++) {
      const r = split(body, [cut, cut + 3]);
      expect(r.passed.equals(messages)).toBe(true);
      expect(r.trailers?.get("grpc-status")).toBe("3");
    }
    // Cuts inside the trailer frame's header and body.
    const t = messages.byteLength;
    for (const cuts of [[t + 1], [t + 4, t + 5], [t + 5, t + 7], [10, 5000, t + 2, t + 9]]) {
      const r = split(body, cuts);
      expect(r.passed.equals(messages)).toBe(true);
      expect(r.trailers?.get("grpc-message")).toBe("bad%20thing");
    }
    const byteByByte = split(body, Array.from({ length: body.byteLength - 1 }, (_, i) => i + 1));
    expect(byteByByte.passed.equals(messages)).toBe(true);
    expect(byteByByte.trailers?.get("grpc-status")).toBe("3");
  });

  it("says when the body ended inside a frame or without trailers", () => {
    expect(split(messages.subarray(0, 3), []).cutShort).toBe(true); // inside a header
    expect(split(messages.subarray(0, 8), []).cutShort).toBe(true); // inside a message
    const noTrailers = split(messages, []);
    expect([noTrailers.cutShort, noTrailers.trailers]).toEqual([false, undefined]);
    expect(split(body.subarray(0, body.byteLength - 2), []).cutShort).toBe(true); // inside the trailers
  });

  it("refuses bytes after the trailers", () => {
    const s = new TrailerSplitter();
    expect(() => s.push(Buffer.concat([body, frame(Buffer.from("x"))]))).toThrow(/after the gRPC-web trailers/);
  });
});

describe("messagesOf", () => {
  it("returns each message of a complete body", () => {
    const body = Buffer.concat([frame(Buffer.from("a")), frame(Buffer.from("bcd"))]);
    expect(messagesOf(body)?.map(String)).toEqual(["a", "bcd"]);
    expect(messagesOf(Buffer.alloc(0))).toEqual([]);
  });

  it("refuses a body cut short or a compressed message", () => {
    expect(messagesOf(frame(Buffer.from("abc")).subarray(0, 6))).toBeUndefined();
    expect(messagesOf(Buffer.from([0, 0, 0]))).toBeUndefined();
    const compressed = frame(Buffer.from("abc"));
    compressed[0] = 1;
    expect(messagesOf(compressed)).toBeUndefined();
  });
});
