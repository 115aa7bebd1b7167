// An HTTP answer goes out only after the request body has been read to its end. A client that is
// still sending when the answer comes (Bazel's Netty HTTP cache client never sends
// `Expect: 100-continue`) sees the connection close under it ("Broken pipe"), counts the upload
// as failed and skips that action's cache entry. So a body the server does not need (a blob it
// already holds, a refused request) is drained, chunk by chunk and discarded, never buffered.
import type { MiddlewareHandler } from "hono";
import { drain } from "../storage/drain.ts";

/** For each request whose body was handed out by requestBody(): reads what is left of it. */
const leftovers = new WeakMap<Request, () => Promise<void>>();

/**
 * The request body as a stream whose cancel() reads the rest instead of dropping the
 * connection, so code that stops reading early (a size or hash mismatch, an error mid-upload)
 * still answers only after the client has sent everything. Code that stops without cancelling
 * (a stream left errored) is covered by {@link answerAfterBody}, which reads the rest. Past
 * `restMax` bytes of rest the connection is dropped instead (see UNREAD_BODY_DRAIN_MAX).
 */
export function requestBody(req: Request, restMax = Infinity): ReadableStream<Uint8Array> {
  const body = req.body;
  if (!body) return new Blob([]).stream();
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  // The runtime's request stream allows one read at a time: the rest is read once, after any
  // read in flight.
  let inFlight: Promise<unknown> = Promise.resolve();
  let rest: Promise<void> | undefined;
  const read = () => {
    reader ??= body.getReader();
    const r = reader.read();
    inFlight = r.catch(() => {});
    return r;
  };
  const readRest = () =>
    (rest ??= (async () => {
      try {
        await inFlight;
        for (let n = 0; ; ) {
          const r = await read();
          if (r.done) return;
          n += r.value.byteLength;
          if (n > restMax) return void (await reader!.cancel());
        }
      } catch {
        // The client went away: nothing left to keep healthy.
      }
    })());
  leftovers.set(req, readRest);
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const { done, value } = await read();
      if (done) ctl.close();
      else ctl.enqueue(value);
    },
    cancel: readRest,
  });
}

/**
 * A body nobody asked for (a refused or unauthenticated request) is read to its end only up to
 * this many bytes; past it the connection is dropped, so a hostile client cannot keep a request
 * busy forever. Bodies of accepted uploads (handed out by requestBody) are read whole.
 */
export const UNREAD_BODY_DRAIN_MAX = 64 * 1024 * 1024;

/**
 * The body of an upload of `size` bytes: when Content-Length says exactly that, the request's own
 * stream, which R2 can read natively (it reads all of it, or fails); otherwise requestBody().
 */
export function uploadBody(req: Request, size: number): { stream: ReadableStream<Uint8Array>; sized: boolean } {
  if (req.body && req.headers.get("content-length") === String(size)) return { stream: req.body, sized: true };
  return { stream: requestBody(req), sized: false };
}

/** Middleware: reads whatever request body the handler left unread before its answer goes out. */
export const answerAfterBody: MiddlewareHandler = async (c, next) => {
  await next();
  const req = c.req.raw;
  const readRest = leftovers.get(req);
  if (readRest) await readRest();
  else if (req.body && !req.body.locked) await drain(req.body, UNREAD_BODY_DRAIN_MAX).catch(() => {});
};
