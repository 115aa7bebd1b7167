// gRPC and gRPC-web frame their messages the same way (a flag byte, a 4-byte big-endian length,
// the message); gRPC-web only adds one last frame, flagged 0x80, that carries the trailers in the
// body. So the bridge can pass a gRPC-web response body on to a gRPC client as it comes, once it
// has taken that trailer frame out: no message is decoded or encoded on the way.
import { trailerFlag, trailerParse } from "@connectrpc/connect/protocol-grpc-web";

const HEADER = 5;

/**
 * Splits a gRPC-web response body, chunk by chunk, into the bytes to pass on (message frames,
 * as slices of the chunks they arrived in) and the trailers. Frames may be cut anywhere
 * across chunks, the 5-byte frame header included.
 */
export class TrailerSplitter {
  /** Bytes of a frame header that arrived without the rest of it. */
  private head = Buffer.alloc(0);
  /** Message bytes still to pass on before the next frame header. */
  private passing = 0;
  /** The trailer frame, while it arrives: its length and what has arrived. */
  private trailer: { length: number; parts: Buffer[]; got: number } | undefined;
  private done: Headers | undefined;

  /** Feeds one chunk; returns the bytes of it to pass on (possibly none). */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.byteLength) {
      if (this.done) throw new Error("bytes after the gRPC-web trailers");
      if (this.trailer) {
        const take = Math.min(this.trailer.length - this.trailer.got, chunk.byteLength - at);
        this.trailer.parts.push(chunk.subarray(at, at + take));
        this.trailer.got += take;
        at += take;
        if (this.trailer.got === this.trailer.length) this.done = trailerParse(Buffer.concat(this.trailer.parts));
        continue;
      }
      if (this.passing > 0) {
        const take = Math.min(this.passing, chunk.byteLength - at);
        out.push(chunk.subarray(at, at + take));
        this.passing -= take;
        at += take;
        continue;
      }
      // A frame header: complete it from this chunk (it may have started in the last one).
      const need = HEADER - this.head.byteLength;
      const part = chunk.subarray(at, at + need);
      at += part.byteLength;
      const head = this.head.byteLength ? Buffer.concat([this.head, part]) : part;
      if (head.byteLength < HEADER) {
        this.head = Buffer.from(head);
        continue;
      }
      this.head = Buffer.alloc(0);
      const length = head.readUInt32BE(1);
      if (head[0]! & trailerFlag) {
        this.trailer = { length, parts: [], got: 0 };
        if (length === 0) this.done = new Headers();
      } else {
        out.push(head);
        this.passing = length;
      }
    }
    return out;
  }

  /** The trailers, once their frame has arrived in full; undefined while (or if never) it has not. */
  get trailers(): Headers | undefined {
    return this.done;
  }

  /** The body ended in the middle of a frame. */
  get cutShort(): boolean {
    return this.passing > 0 || this.head.byteLength > 0 || (this.trailer !== undefined && this.done === undefined);
  }
}

/** The 5-byte gRPC frame header of an uncompressed message of `length` bytes. */
export function frameHeader(length: number): Buffer {
  const b = Buffer.allocUnsafe(HEADER);
  b[0] = 0;
  b.writeUInt32BE(length, 1);
  return b;
}

/**
 * The messages of a complete gRPC request body (unary and server-streaming calls send one);
 * undefined if one is flagged compressed, or the body is cut short. With `cutShort`, a body that
 * ends inside a message gives the whole messages before it.
 */
export function messagesOf(body: Buffer, cutShort = false): Buffer[] | undefined {
  const out: Buffer[] = [];
  for (let at = 0; at < body.byteLength; ) {
    if (body.byteLength - at < HEADER) return cutShort ? out : undefined;
    if (body[at]! !== 0) return undefined; // compressed
    const length = body.readUInt32BE(at + 1);
    if (at + HEADER + length > body.byteLength) return cutShort ? out : undefined;
    out.push(body.subarray(at + HEADER, at + HEADER + length));
    at += HEADER + length;
  }
  return out;
}
