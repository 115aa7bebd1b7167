// ByteStream.Read as gRPC-web with node:http and a frame reader of a few lines: a client as light as
// the bare get's own, so the row measures the worker's path rather than a client's codec. It
// checks what it reads: each message must be a ReadResponse holding only `data`, the frames must
// end whole, and the trailers must say grpc-status 0 (the first round also hashes the bytes).
import http from "node:http";

/** A protobuf varint's bytes. */
export const varint = (n: number): number[] => {
  const out: number[] = [];
  for (; n >= 128; n = Math.floor(n / 128)) out.push((n % 128) | 128);
  out.push(n);
  return out;
};

/** The enveloped ReadRequest{resource_name} (field 1; offset and limit 0: the whole blob). */
export function readRequest(resource: string): Buffer {
  const name = Buffer.from(resource);
  const message = Buffer.concat([Buffer.from([0x0a, ...varint(name.byteLength)]), name]);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.byteLength, 1);
  return Buffer.concat([head, message]);
}

/** Reads gRPC-web frames of ReadResponses, however the chunks cut them; passes the data on. */
export class FrameReader {
  private pending: number[] = []; // a frame header's or a message prefix's bytes so far
  private frameLeft = -1; // bytes left in the current frame; -1: a frame header is next
  private trailer = false;
  private prefix = false; // inside a message's tag and length
  private trailers: Buffer[] = [];
  bytes = 0;

  constructor(private readonly onData?: (c: Buffer) => void) {}

  feed(c: Buffer) {
    for (let at = 0; at < c.byteLength; ) {
      if (this.frameLeft < 0) {
        this.pending.push(c[at++]!);
        if (this.pending.length < 5) continue;
        this.trailer = (this.pending[0]! & 0x80) !== 0;
        this.frameLeft = Buffer.from(this.pending).readUInt32BE(1);
        this.prefix = !this.trailer && this.frameLeft > 0;
        this.pending = [];
        if (this.frameLeft === 0) this.frameLeft = -1;
      } else if (this.prefix) {
        this.pending.push(c[at++]!);
        this.frameLeft--;
        const last = this.pending[this.pending.length - 1]!;
        if (this.pending.length >= 2 && last < 128) {
          if (this.pending[0] !== 0x52) throw new Error(`a ReadResponse field other than data (tag ${this.pending[0]})`);
          const n = this.pending.slice(1).reduceRight((v, b) => v * 128 + (b & 127), 0);
          if (n !== this.frameLeft) throw new Error(`a ReadResponse of ${n} data bytes in ${this.frameLeft} message bytes`);
          this.prefix = false;
          this.pending = [];
          if (this.frameLeft === 0) this.frameLeft = -1;
        } else if (this.frameLeft === 0) throw new Error("a message that ends inside its data field's length");
      } else {
        const take = Math.min(this.frameLeft, c.byteLength - at);
        const part = c.subarray(at, at + take);
        if (this.trailer) this.trailers.push(part);
        else {
          this.bytes += take;
          this.onData?.(part);
        }
        at += take;
        this.frameLeft -= take;
        if (this.frameLeft === 0) this.frameLeft = -1;
      }
    }
  }

  /** The trailers' text, once the body ended on a frame boundary. */
  end(): string {
    if (this.frameLeft !== -1 || this.pending.length) throw new Error("the response ended inside a frame");
    return Buffer.concat(this.trailers).toString("latin1");
  }
}

/** One ByteStream.Read of `resource` from the worker at `base`; returns the data bytes received. */
export function grpcWebRead(base: string, resource: string, a?: http.Agent, onChunk?: (c: Buffer) => void): Promise<number> {
  const body = readRequest(resource);
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/google.bytestream.ByteStream/Read`, {
      method: "POST",
      agent: a,
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", "content-length": String(body.byteLength) },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const frames = new FrameReader(onChunk);
      res.on("data", (c: Buffer) => {
        try {
          frames.feed(c);
        } catch (e) {
          res.destroy();
          reject(e);
        }
      });
      res.on("error", reject);
      res.on("end", () => {
        try {
          const trailers = frames.end();
          if (res.statusCode !== 200 || !/^grpc-status: ?0\r?$/m.test(trailers)) throw new Error(`Read ${resource}: HTTP ${res.statusCode}, trailers ${JSON.stringify(trailers.slice(0, 300))}`);
          resolve(frames.bytes);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.end(body);
  });
}
