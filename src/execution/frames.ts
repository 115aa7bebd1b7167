// Length-prefixed frames: how an OperationDO streams Operation messages to the worker's waiters.
export function encodeFrame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + message.byteLength);
  new DataView(out.buffer).setUint32(0, message.byteLength);
  out.set(message, 4);
  return out;
}

/** Splits a byte stream back into the messages it carries. */
export async function* decodeFrames(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  let buf = new Uint8Array(0);
  try {
    for (;;) {
      while (buf.byteLength >= 4) {
        const len = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
        if (buf.byteLength < 4 + len) break;
        yield buf.slice(4, 4 + len);
        buf = buf.subarray(4 + len);
      }
      const { done, value } = await reader.read();
      if (done) return;
      const next = new Uint8Array(buf.byteLength + value.byteLength);
      next.set(buf);
      next.set(value, buf.byteLength);
      buf = next;
    }
  } finally {
    reader.releaseLock();
  }
}
