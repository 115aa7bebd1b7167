// ByteStream.Read as native gRPC with node:http2 and the gRPC-web row's frame reader: a gRPC client
// as light as the bare get's own, so a row through the bridge measures Kiln's path (the bridge and
// the worker) rather than a client library's codec (grpc-js copies every message whole before it
// decodes it). It checks what it reads as grpcWebRead does; grpc-status comes in HTTP/2 trailers.
import http2 from "node:http2";
import { FrameReader, readRequest } from "./grpc-web-read.ts";

/** A connection to a gRPC server whose receive window is `window` bytes, per stream and in all. */
export function grpcSession(target: string, window: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://${target}`, { settings: { initialWindowSize: window } });
  session.on("connect", () => session.setLocalWindowSize(window));
  session.on("error", () => {}); // each call reports its own failure
  return session;
}

/** One ByteStream.Read of `resource` on `session`; returns the data bytes received. */
export function grpcRead(session: http2.ClientHttp2Session, resource: string, onChunk?: (c: Buffer) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const call = session.request({ ":method": "POST", ":path": "/google.bytestream.ByteStream/Read", "content-type": "application/grpc", te: "trailers" });
    const frames = new FrameReader(onChunk);
    let trailers: http2.IncomingHttpHeaders = {};
    call.on("trailers", (t) => (trailers = t));
    call.on("data", (c: Buffer) => {
      try {
        frames.feed(c);
      } catch (e) {
        call.close(http2.constants.NGHTTP2_CANCEL);
        reject(e);
      }
    });
    call.on("error", reject);
    call.on("end", () => {
      try {
        if (frames.end() !== "") throw new Error("a gRPC-web trailer frame in a native gRPC body");
        if (trailers["grpc-status"] !== "0") throw new Error(`Read ${resource}: grpc-status ${trailers["grpc-status"]}: ${trailers["grpc-message"] ?? ""}`);
        resolve(frames.bytes);
      } catch (e) {
        reject(e);
      }
    });
    call.end(readRequest(resource));
  });
}
