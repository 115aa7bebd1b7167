// Reading a byte stream to its end without keeping it: for bodies whose bytes are not needed
// but whose sender must be allowed to finish (see surfaces/request-body.ts).

/** Reads a stream to its end (or `max` bytes, then cancels it), discarding it; resolves with the bytes read. */
export async function drain(body: ReadableStream<Uint8Array>, max = Infinity): Promise<number> {
  let n = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return n;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel().catch(() => {});
      return n;
    }
  }
}
