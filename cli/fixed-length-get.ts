// A GET whose body is read straight off the socket. node:http copies every body chunk out of the
// socket's buffer into a new Buffer as it parses (node_http_parser's on_body), which for a large
// blob is most of what the bridge spends per byte. Only the response head is parsed here; a
// 200/206 answer with a Content-Length and no transfer coding is handed over as a stream of the
// socket's bytes from the first body byte, read in large chunks. Anything else (an error status, a chunked body, a redirect)
// is left to node:http by the caller: a second GET, which is idempotent.
import net from "node:net";
import { Readable } from "node:stream";

export interface FixedLengthBody {
  status: number;
  /** The Content-Length: `body` carries exactly this many bytes and then ends (or fails). */
  length: number;
  /**
   * The body's bytes, nothing else (the request asked the server to close after it). Paused
   * until read; destroying it closes the connection.
   */
  body: Readable;
}

/** The most a response head may take before the answer is refused (node:http allows 16 KiB). */
const MAX_HEAD_BYTES = 16 * 1024;

/**
 * Each socket read lands in a buffer this large, handed on as it is: a large body arrives
 * in chunks of up to 1 MiB rather than the 64 KiB node:net reads by default, so a blob costs a
 * sixteenth of the reads, callbacks and HTTP/2 writes downstream.
 */
const READ_BUFFER_BYTES = 1024 * 1024;

/**
 * A read that filled less than this much of its buffer is copied out into a buffer of its own
 * size and the big one is read into again, so a trickling origin cannot pin 1 MiB per few bytes
 * while the client is behind (at most 4x the bytes queued).
 */
const COPY_BELOW_BYTES = READ_BUFFER_BYTES / 4;

/**
 * Read buffers handed back (recycle), taken before allocating. A fresh megabyte per read is pages
 * the kernel must map in and garbage V8 must collect: reusing them took the bridge alone, in front
 * of an in-memory origin, from about 1,450 to 1,650 MB/s, with a tenth less CPU.
 */
const spare: Buffer[] = [];
const MAX_SPARE = 8;

/** The memory of chunks handed out whole and not handed back yet: only these may be recycled. */
const lent = new WeakSet<ArrayBufferLike>();

function readBuffer(): Buffer {
  return spare.pop() ?? Buffer.allocUnsafe(READ_BUFFER_BYTES);
}

/**
 * Hands a chunk of a body back once nothing refers to its bytes any more (they were written out
 * and the write's callback ran without error), so that a later read can fill its memory. Any other
 * buffer, or a chunk handed back before, is left alone; a chunk never handed back is garbage.
 */
export function recycle(chunk: Uint8Array) {
  if (!lent.delete(chunk.buffer)) return;
  if (spare.length < MAX_SPARE) spare.push(Buffer.from(chunk.buffer, 0, READ_BUFFER_BYTES));
}

/**
 * Sends `GET path` to an http: origin with `headers` and "Connection: close". Resolves with the
 * body for a fixed-length 200/206, undefined for any other well-formed answer; rejects when the
 * connection fails or the head is not HTTP/1.x.
 */
export function fixedLengthGet(origin: URL, path: string, headers: Record<string, string>): Promise<FixedLengthBody | undefined> {
  const lines = [`GET ${path} HTTP/1.1`, `host: ${origin.host}`, "connection: close"];
  for (const [k, v] of Object.entries(headers)) {
    if (/[\r\n]/.test(k + v)) return Promise.reject(new Error(`a header with a line break: ${k}`));
    if (k !== "host" && k !== "connection") lines.push(`${k}: ${v}`);
  }
  return new Promise((resolve, reject) => {
    let head: Buffer = Buffer.alloc(0);
    let body: Readable | undefined;
    let settled = false;
    let buffer = readBuffer();
    const socket = net.connect({
      host: origin.hostname.replace(/^\[|\]$/g, ""),
      port: Number(origin.port || 80),
      onread: {
        // Asked after each read for the buffer the next one fills.
        buffer: () => buffer,
        callback: (n: number, filled: Uint8Array) => {
          let chunk: Buffer;
          if (n < COPY_BELOW_BYTES) chunk = Buffer.copyBytesFrom(filled, 0, n);
          else {
            chunk = Buffer.from(filled.buffer, filled.byteOffset, n);
            lent.add(filled.buffer);
            buffer = readBuffer();
          }
          // false stops reading the socket until the body is read again (its read() resumes it).
          return body ? body.push(chunk) : onHeadBytes(chunk);
        },
      },
    });
    socket.setNoDelay(true);
    // Flowing from the start: bytes never queue in the socket itself (the callback takes them),
    // and only a flowing socket reports the end of its bytes.
    socket.resume();
    socket.write(`${lines.join("\r\n")}\r\n\r\n`);

    /** Takes bytes of the head; false: the body's first bytes filled its buffer. */
    function onHeadBytes(chunk: Buffer): boolean {
      head = head.byteLength ? Buffer.concat([head, chunk]) : chunk;
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        return head.byteLength > MAX_HEAD_BYTES ? fail(new Error("the response head is over 16 KiB")) : true;
      }
      if (end > MAX_HEAD_BYTES) return fail(new Error("the response head is over 16 KiB"));
      const answer = parseHead(head.subarray(0, end).toString("latin1"));
      if (!answer) return fail(new Error("the answer is not HTTP/1.x"));
      settled = true;
      if (answer.length === undefined) {
        socket.destroy();
        resolve(undefined);
        return false;
      }
      body = bodyOf(socket);
      const rest = head.subarray(end + 4);
      resolve({ status: answer.status, length: answer.length, body });
      return rest.byteLength ? body.push(rest) : true;
    }
    function fail(e: Error): false {
      socket.destroy();
      if (!settled) {
        settled = true;
        reject(e);
      }
      return false;
    }
    socket.on("end", () => {
      if (body) body.push(null);
      else fail(new Error("the connection closed before the response head"));
    });
    socket.on("error", (e) => (body ? body.destroy(e) : fail(e)));
    // The buffer the next read would have filled was never handed out: it is free.
    socket.on("close", () => {
      if (spare.length < MAX_SPARE) spare.push(buffer);
    });
  });
}

/** A Readable over the socket's remaining bytes, which the socket's read callback pushes. */
function bodyOf(socket: net.Socket): Readable {
  return new Readable({
    // Asked for more: the socket stopped reading if a push found the buffer full.
    read: () => void socket.resume(),
    destroy: (err, done) => {
      socket.destroy();
      done(err);
    },
  });
}

/** Status and, for a fixed-length 200/206, its length; undefined: not an HTTP/1.x head. */
function parseHead(text: string): { status: number; length?: number } | undefined {
  const [statusLine, ...fields] = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine!);
  if (!m) return undefined;
  const status = Number(m[1]);
  let length: number | undefined;
  let coded = false;
  for (const field of fields) {
    const colon = field.indexOf(":");
    if (colon <= 0) return undefined;
    const name = field.slice(0, colon).trim().toLowerCase();
    const value = field.slice(colon + 1).trim();
    if (name === "transfer-encoding") coded = true;
    else if (name === "content-length") {
      // Two different lengths make the body's end unknowable: no length at all.
      const n = /^\d{1,15}$/.test(value) ? Number(value) : NaN;
      length = length === undefined || length === n ? n : NaN;
    }
  }
  const fixed = (status === 200 || status === 206) && !coded && length !== undefined && Number.isSafeInteger(length);
  return { status, length: fixed ? length : undefined };
}
