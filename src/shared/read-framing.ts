// ReadResponse messages written around a blob's bytes, without copying or encoding them: a message
// is a 5-byte gRPC frame header, ReadResponse.data's tag and length, then the bytes. The worker's
// gRPC-web read lane writes each header into room in front of its piece; `kiln bridge`, whose
// ByteStream.Read is a plain GET of the blob, sends a header and then the GET's chunks as they
// come (ReadFramer). Web-standard: it runs in both.

/**
 * ReadResponse messages of up to this many bytes. Measured with grpc-js, 16 KiB to 3 MiB
 * messages read at about the same speed; this size keeps a client's per-message work small and
 * stays well under 4 MiB, the usual limit on a message a client accepts.
 */
export const READ_MESSAGE_BYTES = 1024 * 1024;

/** The most bytes readResponseHead writes for a message of up to 2^21 - 1 bytes (READ_MESSAGE_BYTES and more). */
export const READ_HEAD_ROOM = 5 + 1 + 3;

/** ReadResponse.data is field 10, length-delimited. */
const DATA_TAG = (10 << 3) | 2;

/**
 * The frame header and ReadResponse prefix of a message carrying `n` bytes of data. An empty
 * ReadResponse is an empty message, as protobuf encoders write it (proto3 leaves out empty bytes).
 */
export function readResponseHead(n: number): Uint8Array {
  if (n === 0) return new Uint8Array(5);
  const varint: number[] = [];
  for (let v = n; ; v = Math.floor(v / 128)) {
    if (v < 128) {
      varint.push(v);
      break;
    }
    varint.push((v % 128) | 128);
  }
  const head = new Uint8Array(5 + 1 + varint.length);
  new DataView(head.buffer).setUint32(1, 1 + varint.length + n); // flag byte 0: an uncompressed message
  head[5] = DATA_TAG;
  head.set(varint, 6);
  return head;
}

/** Turns a blob's bytes into ReadResponse frames, without copying them. */
export class ReadFramer {
  /** Bytes the current message header announced that have not arrived yet. */
  owed = 0;

  /** `remaining`: the bytes to come, if known; otherwise each chunk is one message. */
  constructor(private remaining: number | undefined) {}

  push<T extends Uint8Array>(chunk: T): (T | Uint8Array)[] {
    if (this.remaining === undefined) return chunk.byteLength ? [readResponseHead(chunk.byteLength), chunk] : [];
    const out: (T | Uint8Array)[] = [];
    for (let at = 0; at < chunk.byteLength; ) {
      if (this.owed === 0) {
        // Bytes past the announced length (node:http never delivers them): a message of their own.
        const n = this.remaining > 0 ? Math.min(READ_MESSAGE_BYTES, this.remaining) : chunk.byteLength - at;
        this.remaining = Math.max(0, this.remaining - n);
        this.owed = n;
        out.push(readResponseHead(n));
      }
      const take = Math.min(this.owed, chunk.byteLength - at);
      out.push(chunk.subarray(at, at + take));
      this.owed -= take;
      at += take;
    }
    return out;
  }
}
