// Reads of stored bytes that fail (R2 unreachable, or a body that breaks off mid-way) as what they
// are to the client: UNAVAILABLE, naming what was being read, which clients retry. Not an internal
// error, and never a short read taken for a whole one. A verdict already given (NOT_FOUND, a
// refused range) passes unchanged.
import { unavailableFrom, type ConnectError } from "../errors.ts";

/** A read of `what` that failed, as UNAVAILABLE with `advice` (a verdict already given, e.g. NOT_FOUND, stays). */
export const readFailed = (what: string, advice: string, e: unknown): ConnectError => unavailableFrom(`reading ${what} broke off`, e, advice);

/** The bytes `open` gives, a failure to open or read them turned into readFailed's UNAVAILABLE. */
export async function* readOf<T>(what: string, advice: string, open: () => Promise<AsyncIterable<T>> | AsyncIterable<T>): AsyncGenerator<T> {
  let it: AsyncIterator<T>;
  try {
    it = (await open())[Symbol.asyncIterator]();
  } catch (e) {
    throw readFailed(what, advice, e);
  }
  let done = false;
  try {
    for (;;) {
      let n: IteratorResult<T>;
      try {
        n = await it.next();
      } catch (e) {
        done = true; // a source that threw is finished
        throw readFailed(what, advice, e);
      }
      if (n.done) return void (done = true);
      yield n.value;
    }
  } finally {
    if (!done) await it.return?.(); // the reader stopped early: release the source (an R2 body)
  }
}
