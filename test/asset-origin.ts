// A scripted HTTP origin for Remote Asset fetch tests (workerd tests reach it through globalSetup,
// e2e tests start their own). What it serves is said by the query, so a test knows the bytes and
// their hashes without a shared table:
//   /any/path?text=abc            the bytes of "abc", with Content-Length
//   /any/path?repeat=N&byte=B     N bytes of value B (default 120), streamed in 64 KiB writes
//   &chunked=1                    no Content-Length (chunked transfer encoding)
//   &type=text/plain              the Content-Type
//   &status=404                   that status, empty body
//   &redirect=URL                 302 to URL
//   &hang=1                       never answers (timeouts)
//   &cut=1                        declares the whole length (unless chunked), sends half, then drops the connection
// GET /hits?path=/any/path counts requests seen for that path (refused fetches must not arrive).
// GET /headers?path=/any/path: the headers of the last request for that path, as JSON ({} if none).
// The same server also listens on a second port, `otherUrl`: another origin (scheme, host and
// port) for cross-origin redirects, sharing the counts and headers.
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface AssetOrigin {
  url: string;
  otherUrl: string;
  hits(path: string): number;
  close(): Promise<void>;
}

export async function startAssetOrigin(): Promise<AssetOrigin> {
  const hits = new Map<string, number>();
  const headersSeen = new Map<string, http.IncomingHttpHeaders>();
  const handle: http.RequestListener = (req, res) => {
    const u = new URL(req.url ?? "/", "http://origin");
    const q = u.searchParams;
    if (u.pathname === "/hits") {
      res.end(String(hits.get(q.get("path") ?? "") ?? 0));
      return;
    }
    if (u.pathname === "/headers") {
      res.end(JSON.stringify(headersSeen.get(q.get("path") ?? "") ?? {}));
      return;
    }
    hits.set(u.pathname, (hits.get(u.pathname) ?? 0) + 1);
    headersSeen.set(u.pathname, req.headers);
    if (q.has("hang")) return;
    if (q.has("redirect")) {
      res.writeHead(302, { location: q.get("redirect")! }).end();
      return;
    }
    const status = Number(q.get("status") ?? 200);
    if (status !== 200) {
      res.writeHead(status).end();
      return;
    }
    const headers: http.OutgoingHttpHeaders = { "content-type": q.get("type") ?? "application/octet-stream" };
    const text = q.get("text");
    const length = text !== null ? Buffer.byteLength(text) : Number(q.get("repeat") ?? 0);
    if (!q.has("chunked")) headers["content-length"] = length;
    res.writeHead(200, headers);
    if (q.has("cut")) {
      // Dropped once the half has gone out (not at a fixed time): the client surely has it all.
      const half = text !== null ? Buffer.from(text).subarray(0, length >> 1) : Buffer.alloc(length >> 1, Number(q.get("byte") ?? 120));
      res.write(half, () => setTimeout(() => res.destroy(), 50));
      return;
    }
    if (text !== null) {
      res.end(text);
      return;
    }
    const block = Buffer.alloc(64 * 1024, Number(q.get("byte") ?? 120));
    let left = length;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, block.length);
        left -= n;
        if (!res.write(block.subarray(0, n))) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
  };
  const servers = [http.createServer(handle), http.createServer(handle)];
  const urls = await Promise.all(
    servers.map(async (server) => {
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    }),
  );
  return {
    url: urls[0]!,
    otherUrl: urls[1]!,
    hits: (path) => hits.get(path) ?? 0,
    close: async () => {
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              server.closeAllConnections();
              server.close(() => resolve());
            }),
        ),
      );
    },
  };
}
