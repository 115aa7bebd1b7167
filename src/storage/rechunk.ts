// Re-slices a byte stream into pieces of at most `max` bytes (message-size limits), without
// gathering more than one source chunk at a time.
export async function* rechunk(body: ReadableStream<Uint8Array>, max: number): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    for (let i = 0; i < chunk.byteLength; i += max) yield chunk.subarray(i, Math.min(i + max, chunk.byteLength));
  }
}
