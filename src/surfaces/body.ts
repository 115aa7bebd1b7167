// Request bodies read whole (JSON, action results) with a bound, whether or not the client sent a
// Content-Length: a chunked body is read only up to the limit, then refused.
import { invalidArgument } from "../errors.ts";
import { concatBytes } from "../shared/concat-bytes.ts";

/** The body's bytes; INVALID_ARGUMENT naming `limitName` once more than `max` bytes arrive. */
export async function readBodyBounded(req: Request, max: number, limitName: string): Promise<Uint8Array> {
  const tooLarge = () => invalidArgument(`the request body is over ${max} bytes (${limitName})`);
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > max) throw tooLarge();
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      // Not cancelled: answerAfterBody reads the rest before answering, so the client that is
      // still sending sees a clean refusal rather than a dropped connection.
      reader.releaseLock();
      throw tooLarge();
    }
    chunks.push(value);
  }
  return concatBytes(chunks, total);
}
