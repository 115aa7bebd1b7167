// Reading a byte stream to its end without keeping it: for bodies whose bytes are not needed
// but whose sender must be allowed to finish (see surfaces/request-body.ts).

/** Reads a stream to its end, discarding it; resolves with the number of bytes read. */
export async function drain(body: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of body) n += chunk.byteLength;
  return n;
}
