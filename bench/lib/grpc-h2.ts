// ByteStream.Read and Write as native gRPC with node:http2 and a few lines of framing: a gRPC
// client as light as the bare get's and put's own node:http, so a row through the bridge measures
// Kiln's path (the bridge and the worker) rather than a client library's codec. grpc-js, the
// bench's other gRPC client, copies every message whole before it decodes it, and encodes every
// WriteRequest into a buffer of its own and then again behind its frame header. Reads are checked
// as grpcWebRead checks them; grpc-status comes in HTTP/2 trailers.
import http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { WriteResponseSchema } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { FrameReader, readRequest, varint } from "./grpc-web-read.ts";

/** A connection to a gRPC server whose receive window is `window` bytes, per stream and in all. */
export function grpcSession(target: string, window: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://${target}`, { settings: { initialWindowSize: window } });
  session.on("connect", () => session.setLocalWindowSize(window));
  session.on("error", () => {}); // each call reports its own failure
  return session;
}

const call = (session: http2.ClientHttp2Session, method: string) =>
  session.request({ ":method": "POST", ":path": `/google.bytestream.ByteStream/${method}`, "content-type": "application/grpc", te: "trailers" });

/** Rejects unless the call's trailers say grpc-status 0. */
function checkStatus(trailers: http2.IncomingHttpHeaders, what: string) {
  if (trailers["grpc-status"] !== "0") throw new Error(`${what}: grpc-status ${trailers["grpc-status"]}: ${trailers["grpc-message"] ?? ""}`);
}

/** One ByteStream.Read of `resource` on `session`; returns the data bytes received. */
export function grpcRead(session: http2.ClientHttp2Session, resource: string, onChunk?: (c: Buffer) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const read = call(session, "Read");
    const frames = new FrameReader(onChunk);
    let trailers: http2.IncomingHttpHeaders = {};
    read.on("trailers", (t) => (trailers = t));
    read.on("data", (c: Buffer) => {
      try {
        frames.feed(c);
      } catch (e) {
        read.close(http2.constants.NGHTTP2_CANCEL);
        reject(e);
      }
    });
    read.on("error", reject);
    read.on("end", () => {
      try {
        if (frames.end() !== "") throw new Error("a gRPC-web trailer frame in a native gRPC body");
        checkStatus(trailers, `Read ${resource}`);
        resolve(frames.bytes);
      } catch (e) {
        reject(e);
      }
    });
    read.end(readRequest(resource));
  });
}

/**
 * The frame header and WriteRequest fields in front of `dataLength` bytes of data: resource_name
 * (1) on the first message, write_offset (2) when not 0, finish_write (3) on the last, then the
 * data field's tag (10) and length. The data follows as its own write, not copied.
 */
function writeHead(resource: string | undefined, offset: number, last: boolean, dataLength: number): Buffer {
  const fields: number[] = [];
  if (resource !== undefined) {
    const name = Buffer.from(resource);
    fields.push(0x0a, ...varint(name.byteLength), ...name);
  }
  if (offset) fields.push(0x10, ...varint(offset));
  if (last) fields.push(0x18, 1);
  fields.push(0x52, ...varint(dataLength));
  const head = Buffer.alloc(5 + fields.length);
  head.writeUInt32BE(fields.length + dataLength, 1);
  head.set(fields, 5);
  return head;
}

/** One ByteStream.Write of `chunks` (finish_write on the last) on `session`; returns committed_size. */
export function grpcWrite(session: http2.ClientHttp2Session, resource: string, chunks: Iterable<Uint8Array>): Promise<number> {
  return new Promise((resolve, reject) => {
    const write = call(session, "Write");
    const answer: Buffer[] = [];
    let trailers: http2.IncomingHttpHeaders = {};
    write.on("trailers", (t) => (trailers = t));
    write.on("data", (c: Buffer) => answer.push(c));
    write.on("error", reject);
    write.on("end", () => {
      try {
        checkStatus(trailers, `Write ${resource}`);
        const body = Buffer.concat(answer);
        if (body.byteLength < 5 || body.readUInt32BE(1) !== body.byteLength - 5) throw new Error(`Write ${resource}: not one WriteResponse`);
        resolve(Number(fromBinary(WriteResponseSchema, body.subarray(5)).committedSize));
      } catch (e) {
        reject(e);
      }
    });
    const it = chunks[Symbol.iterator]();
    let offset = 0;
    let cur = it.next();
    const pump = () => {
      while (!cur.done) {
        const data = cur.value;
        const next = it.next();
        write.write(writeHead(offset === 0 ? resource : undefined, offset, !!next.done, data.byteLength));
        const more = write.write(data);
        offset += data.byteLength;
        cur = next;
        if (cur.done) return void write.end();
        if (!more) return void write.once("drain", pump);
      }
      write.end(); // no chunks at all: an empty Write
    };
    pump();
  });
}
