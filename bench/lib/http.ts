// Streamed HTTP PUT/GET with node:http (keep-alive), never buffering a large body.
import http from "node:http";

export function agent(maxSockets: number) {
  return new http.Agent({ keepAlive: true, maxSockets });
}

/** PUT `chunks` (exactly `size` bytes) to url with Content-Length, honouring backpressure. */
export function put(url: string, size: number, chunks: Iterable<Uint8Array>, a?: http.Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "PUT", agent: a, headers: { "content-length": String(size), "content-type": "application/octet-stream" } });
    req.on("error", reject);
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d.length < 2000 ? d : ""));
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`PUT ${url}: HTTP ${res.statusCode} ${body.slice(0, 500)}`))));
      res.on("error", reject);
    });
    const it = chunks[Symbol.iterator]();
    const pump = () => {
      for (;;) {
        const n = it.next();
        if (n.done) return void req.end();
        if (!req.write(n.value)) return void req.once("drain", pump);
      }
    };
    pump();
  });
}

/** GET url; counts the body's bytes and feeds each chunk to `onChunk` if given. */
export function get(url: string, a?: http.Agent, onChunk?: (c: Buffer) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: a }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new Error(`GET ${url}: HTTP ${res.statusCode}`));
      }
      let n = 0;
      res.on("data", (c: Buffer) => {
        n += c.byteLength;
        onChunk?.(c);
      });
      res.on("end", () => resolve(n));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}
