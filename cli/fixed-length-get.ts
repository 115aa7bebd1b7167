// A GET whose body is read straight off the socket. node:http copies every body chunk out of the
// socket's buffer into a new Buffer as it parses (node_http_parser's on_body), which for a large
// blob is most of what the bridge spends per byte. Only the response head is parsed here; a
// 200/206 answer with a Content-Length and no transfer coding is handed over as the socket itself,
// positioned at the first body byte. Anything else (an error status, a chunked body, a redirect)
// is left to node:http by the caller: a second GET, which is idempotent.
import net from "node:net";

export interface FixedLengthBody {
  status: number;
  /** The Content-Length: the socket carries exactly this many bytes and then closes. */
  length: number;
  /**
   * Carries the body and nothing else (the request asked the server to close after it). It was
   * last read in paused mode: call resume() after adding a "data" listener.
   */
  socket: net.Socket;
}

/** The most a response head may take before the answer is refused (node:http allows 16 KiB). */
const MAX_HEAD_BYTES = 16 * 1024;

/**
 * Sends `GET path` to an http: origin with `headers` and "Connection: close". Resolves with the
 * body's socket for a fixed-length 200/206, undefined for any other well-formed answer; rejects
 * when the connection fails or the head is not HTTP/1.x.
 */
export function fixedLengthGet(origin: URL, path: string, headers: Record<string, string>): Promise<FixedLengthBody | undefined> {
  const lines = [`GET ${path} HTTP/1.1`, `host: ${origin.host}`, "connection: close"];
  for (const [k, v] of Object.entries(headers)) {
    if (/[\r\n]/.test(k + v)) return Promise.reject(new Error(`a header with a line break: ${k}`));
    if (k !== "host" && k !== "connection") lines.push(`${k}: ${v}`);
  }
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: origin.hostname.replace(/^\[|\]$/g, ""), port: Number(origin.port || 80) });
    socket.setNoDelay(true);
    socket.write(`${lines.join("\r\n")}\r\n\r\n`);
    let head: Buffer = Buffer.alloc(0);
    const onReadable = () => {
      for (let chunk: Buffer | null; (chunk = socket.read()) !== null; ) {
        head = head.byteLength ? Buffer.concat([head, chunk]) : chunk;
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) {
          if (head.byteLength > MAX_HEAD_BYTES) return fail(new Error("the response head is over 16 KiB"));
          continue;
        }
        if (end > MAX_HEAD_BYTES) return fail(new Error("the response head is over 16 KiB"));
        done();
        const answer = parseHead(head.subarray(0, end).toString("latin1"));
        if (!answer) return fail(new Error("the answer is not HTTP/1.x"));
        if (answer.length === undefined) {
          socket.destroy();
          return resolve(undefined);
        }
        const rest = head.subarray(end + 4);
        if (rest.byteLength) socket.unshift(rest);
        return resolve({ status: answer.status, length: answer.length, socket });
      }
    };
    const onEnd = () => fail(new Error("the connection closed before the response head"));
    const done = () => {
      socket.off("readable", onReadable);
      socket.off("end", onEnd);
      socket.off("error", fail);
    };
    function fail(e: Error) {
      done();
      socket.destroy();
      reject(e);
    }
    socket.on("readable", onReadable);
    socket.on("end", onEnd);
    socket.on("error", fail);
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
