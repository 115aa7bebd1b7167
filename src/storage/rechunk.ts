// A byte stream re-sliced into pieces of `max` bytes (the last may be shorter): one message each
// for a streamed read (ByteStream.Read, ResultStore file downloads).
//
// R2 hands a large object out in many small chunks, and every chunk that passes through JavaScript
// costs a promise and a hop of the response stream; sent one message per chunk, a 256 MiB
// ByteStream.Read over gRPC-web ran at 19 MB/s here while a plain GET of the same blob ran at
// 750-880 MB/s. A BYOB reader's readAtLeast (a workerd extension) fills a whole piece in one call
// instead; the same read then ran at 517-538 MB/s. A stream without BYOB support (not a byte
// stream) is gathered chunk by chunk into the same pieces. At most one piece is held, and with the
// stream's `length` known no piece is larger than what is left (a small blob gets a small buffer).
//
// `room`: each piece is a view starting that many bytes into a buffer of its own, so a caller can
// write a message header in front of it and send both as one buffer, without copying the piece
// (a small write followed by a large one is two TCP segments, and Nagle's algorithm holds the
// second until the first is acknowledged).
//
// A body that ends before its known `length` is an error, not a short success: a reader must never
// take a cut-off blob for the whole of it (the stream's own end says nothing about the object).
export async function* rechunk(body: ReadableStream<Uint8Array>, max: number, length = Infinity, room = 0): AsyncGenerator<Uint8Array> {
  let left = length;
  const next = () => Math.max(1, Math.min(max, left));
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    byob = undefined;
  }
  if (byob) {
    let ended = false;
    try {
      for (;;) {
        const n = next();
        const { value } = await byob.readAtLeast(n, new Uint8Array(room + n).subarray(room));
        ended = !value || value.byteLength < n;
        if (value?.byteLength) yield value;
        left -= value?.byteLength ?? 0;
        if (ended) return checkWhole(left, length);
      }
    } finally {
      // A reader that stops early (a client gone, an error) cancels the body, as for-await does,
      // so R2 stops sending; one that read to the end only lets go of it.
      if (!ended) await byob.cancel().catch(() => {});
      byob.releaseLock();
    }
  }
  let piece: Uint8Array | undefined;
  let filled = 0;
  for await (const chunk of body) {
    for (let at = 0; at < chunk.byteLength; ) {
      piece ??= new Uint8Array(room + next()).subarray(room);
      const take = Math.min(piece.byteLength - filled, chunk.byteLength - at);
      piece.set(chunk.subarray(at, at + take), filled);
      filled += take;
      at += take;
      if (filled === piece.byteLength) {
        yield piece;
        left -= filled;
        piece = undefined;
        filled = 0;
      }
    }
  }
  if (piece && filled > 0) yield piece.subarray(0, filled);
  checkWhole(left - filled, length);
}

function checkWhole(left: number, length: number): void {
  if (Number.isFinite(length) && left > 0) throw new Error(`the stored bytes ended ${left} short of the ${length} to read`);
}
