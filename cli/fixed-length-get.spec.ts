// fixedLengthGet against stand-in origins: raw TCP servers that write exactly the bytes a test
// needs (a head cut anywhere, body bytes in the head's packet, malformed heads), and node:http.
import { randomBytes } from "node:crypto";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { fixedLengthGet, recycle, type FixedLengthBody } from "./fixed-length-get.ts";

const closers: (() => void)[] = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

/** A TCP server that records each request's head and answers with `pieces`, written apart. */
async function rawOrigin(pieces: (Buffer | string)[], opts: { close?: boolean } = {}) {
  const heads: string[] = [];
  const server = net.createServer((socket) => {
    let head = "";
    socket.on("data", async (d) => {
      head += d.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      heads.push(head);
      for (const p of pieces) {
        socket.write(p);
        await new Promise((r) => setTimeout(r, 2));
      }
      if (opts.close !== false) socket.end();
    });
    socket.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => server.close());
  return { url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), heads };
}

/** Everything the body's socket carries until it ends. */
async function drain(body: FixedLengthBody): Promise<Buffer> {
  return Buffer.concat(await chunksOf(body));
}

/** The body's chunks as handed over, until it ends. */
function chunksOf(body: FixedLengthBody): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    body.body.on("data", (d: Buffer) => parts.push(d));
    body.body.on("end", () => resolve(parts));
    body.body.on("error", reject);
  });
}

/** A node:http origin answering `GET /{i}` with blobs[i]. */
async function blobOrigin(blobs: Buffer[]): Promise<URL> {
  const server = http.createServer((req, res) => {
    const blob = blobs[Number(req.url!.slice(1))]!;
    res.writeHead(200, { "content-length": blob.byteLength });
    res.end(blob);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => server.close());
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
}

describe("fixedLengthGet", () => {
  it("hands over a fixed-length body from its first byte, wherever the head was cut", async () => {
    const blob = randomBytes(200_000);
    const head = `HTTP/1.1 200 OK\r\nContent-Length: ${blob.byteLength}\r\nContent-Type: application/octet-stream\r\n\r\n`;
    const whole = Buffer.concat([Buffer.from(head), blob]);
    // Cut inside the status line, inside "\r\n\r\n", right after it, and with body bytes in the head's piece.
    for (const cuts of [[5], [head.length - 3, head.length - 1], [head.length], [head.length + 10, head.length + 70_000]]) {
      const pieces: Buffer[] = [];
      let from = 0;
      for (const to of [...cuts, whole.byteLength]) {
        pieces.push(whole.subarray(from, to));
        from = to;
      }
      const origin = await rawOrigin(pieces);
      const body = await fixedLengthGet(origin.url, "/b/blobs/x/1", {});
      expect(body).toMatchObject({ status: 200, length: blob.byteLength });
      expect((await drain(body!)).equals(blob)).toBe(true);
    }
  });

  it("sends the path, the host, the given headers and Connection: close", async () => {
    const origin = await rawOrigin(["HTTP/1.1 206 Partial Content\r\ncontent-length: 3\r\n\r\nabc"]);
    const body = await fixedLengthGet(origin.url, "/main/blobs/h/10", { authorization: "Bearer k", range: "bytes=2-4", connection: "keep-alive" });
    expect(body).toMatchObject({ status: 206, length: 3 });
    expect((await drain(body!)).toString()).toBe("abc");
    const [request, ...fields] = origin.heads[0]!.trimEnd().split("\r\n");
    expect(request).toBe("GET /main/blobs/h/10 HTTP/1.1");
    expect(fields.sort()).toEqual(["authorization: Bearer k", "connection: close", `host: ${origin.url.host}`, "range: bytes=2-4"]);
  });

  it("leaves every other answer to node:http: an error status, a chunked body, no length, two lengths", async () => {
    for (const head of [
      "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\n\r\nabc",
      "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
      "HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\nabc",
      "HTTP/1.1 301 Moved\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n",
    ]) {
      const origin = await rawOrigin([head]);
      expect(await fixedLengthGet(origin.url, "/x", {}), head).toBeUndefined();
    }
    // The same length twice is one length.
    const twice = await rawOrigin(["HTTP/1.1 200 OK\r\ncontent-length: 3\r\nContent-Length: 3\r\n\r\nabc"]);
    expect(await fixedLengthGet(twice.url, "/x", {})).toMatchObject({ length: 3 });
  });

  it("refuses what is not an HTTP/1.x answer, a head that never ends, and a connection that closes first", async () => {
    const cases: [(Buffer | string)[], RegExp][] = [
      [["SSH-2.0-OpenSSH\r\n\r\n"], /not HTTP/],
      [["HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"], /not HTTP/],
      [["HTTP/1.1 200 OK\r\n", `x: ${"a".repeat(20_000)}`], /over 16 KiB/],
      [["HTTP/1.1 200 OK\r\ncontent-length: 3\r\n"], /closed before the response head/],
      [[], /closed before the response head/],
    ];
    for (const [pieces, why] of cases) {
      const origin = await rawOrigin(pieces);
      await expect(fixedLengthGet(origin.url, "/x", {})).rejects.toThrow(why);
    }
  });

  it("refuses a header value with a line break, and rejects when nothing listens", async () => {
    const origin = await rawOrigin(["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]);
    await expect(fixedLengthGet(origin.url, "/x", { "x-a": "1\r\nx-b: 2" })).rejects.toThrow(/line break/);
    expect(origin.heads).toEqual([]);
    await expect(fixedLengthGet(new URL("http://127.0.0.1:9"), "/x", {})).rejects.toThrow(/ECONNREFUSED/);
  });

  it("reads what node:http serves, a large body included", async () => {
    const blob = randomBytes(5 * 1024 * 1024);
    const body = await fixedLengthGet(await blobOrigin([blob]), "/0", {});
    expect(body?.length).toBe(blob.byteLength);
    expect((await drain(body!)).equals(blob)).toBe(true);
  });

  it("reads into the memory of chunks handed back, and never into memory lent out twice", async () => {
    const blobs = [randomBytes(6 * 1024 * 1024), randomBytes(6 * 1024 * 1024)];
    const origin = await blobOrigin(blobs);
    const first = await chunksOf((await fixedLengthGet(origin, "/0", {}))!);
    expect(Buffer.concat(first).equals(blobs[0]!)).toBe(true);
    for (const c of first) {
      recycle(c);
      recycle(c); // a second hand-back is ignored, or two reads below would fill the same memory
    }
    recycle(Buffer.alloc(1024 * 1024)); // never lent: ignored
    // Two reads at once, neither handing anything back: each has memory of its own.
    const [a, b] = await Promise.all(["/0", "/1"].map(async (p) => chunksOf((await fixedLengthGet(origin, p, {}))!)));
    expect(Buffer.concat(a!).equals(blobs[0]!)).toBe(true);
    expect(Buffer.concat(b!).equals(blobs[1]!)).toBe(true);
    const memoryOf = (chunks: Buffer[]) => new Set(chunks.map((c) => c.buffer));
    const inA = memoryOf(a!);
    expect([...memoryOf(b!)].filter((m) => inA.has(m))).toEqual([]);
    // The first read's memory was read into again.
    const firstMemory = memoryOf(first);
    expect([...a!, ...b!].some((c) => firstMemory.has(c.buffer))).toBe(true);
  });

  it("stops reading the socket while its reader is behind, and loses nothing when it catches up", async () => {
    const blob = randomBytes(64 * 1024 * 1024);
    let written = 0;
    const server = http.createServer((req, res) => {
      res.writeHead(200, { "content-length": blob.byteLength });
      const more = () => {
        while (written < blob.byteLength) {
          const piece = blob.subarray(written, written + 256 * 1024);
          written += piece.byteLength;
          if (!res.write(piece)) return void res.once("drain", more);
        }
        res.end();
      };
      more();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    closers.push(() => server.close());
    const got = await fixedLengthGet(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), "/x", {});
    // Nobody reads for a while: the origin is held back by TCP, not drained into this process.
    await new Promise((r) => setTimeout(r, 500));
    expect(written).toBeLessThan(blob.byteLength / 2);
    expect(got!.body.readableLength).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect((await drain(got!)).equals(blob)).toBe(true);
  });
});
