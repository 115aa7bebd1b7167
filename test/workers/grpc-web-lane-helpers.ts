// For the gRPC-web lanes' tests (find-missing-fast-lane, bytestream-read-lane): a request as the
// lane sees it, a fallback that records what it was handed, and a call through the worker (the
// lane) or to the Connect router alone, split into its frames.
import { SELF } from "cloudflare:test";
import type { UniversalHandlerFn, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { expect } from "vitest";
import { routerOnly } from "../../src/surfaces/connect.ts";
import { concat } from "./fuzz-gen.ts";

/** One gRPC-web envelope around `m`. */
export function envelope(m: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(5 + m.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, m.byteLength);
  out.set(m, 5);
  return out;
}

export async function collect(body: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of body) parts.push(c);
  return concat(...parts);
}

/** A plain gRPC-web request to `path`, its body arriving in two chunks. */
export function laneRequest(path: string, body: Uint8Array, headers: Record<string, string> = {}): UniversalServerRequest {
  return {
    httpVersion: "1.1",
    method: "POST",
    url: `http://kiln${path}`,
    header: new Headers({ "content-type": "application/grpc-web+proto", "content-length": String(body.byteLength), ...headers }),
    body: (async function* () {
      yield body.subarray(0, 3);
      yield body.subarray(3);
    })(),
    signal: new AbortController().signal,
    contextValues: undefined as never,
  };
}

/** Runs a lane whose fallback answers 299 and records the bytes it was handed. */
export async function runLane(lane: (fallback: UniversalHandlerFn, readMaxBytes: number) => UniversalHandlerFn, req: UniversalServerRequest, readMaxBytes = 1024 * 1024) {
  let handed: Uint8Array | undefined;
  const fallback: UniversalHandlerFn = async (r) => {
    handed = await collect(r.body as AsyncIterable<Uint8Array>);
    return { status: 299 };
  };
  const res = await lane(fallback, readMaxBytes)(req);
  return { res, handed };
}

/** A gRPC-web response body as its message frames (headers included) and its trailer's status and message. */
export function splitFrames(bytes: Uint8Array) {
  let at = 0;
  let trailer = "";
  const messages: Uint8Array[] = [];
  while (at + 5 <= bytes.length) {
    const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(at + 1);
    if (bytes[at]! & 0x80) trailer = new TextDecoder().decode(bytes.subarray(at + 5, at + 5 + n));
    else messages.push(bytes.subarray(at, at + 5 + n));
    at += 5 + n;
  }
  return {
    whole: at === bytes.length,
    messages,
    status: Number(/grpc-status: (\d+)/.exec(trailer)?.[1]),
    // Without the request's own id (a RequestInfo detail on errors, in grpc-status-details-bin).
    message: decodeURIComponent(/grpc-message: (.*)\r\n/.exec(trailer)?.[1] ?? ""),
  };
}

/**
 * A gRPC-web call to `path`: through the worker, its body with a Content-Length ("sized") or
 * streamed without one ("streamed"), both of which the lane takes; or to the Connect router's own
 * handler for the path, without the lane ("router"). Through SELF.fetch a body of known length,
 * even a Blob's stream, arrives with a Content-Length: only a stream of the test's own has none.
 */
export async function callWorker(path: string, message: Uint8Array, via: "sized" | "streamed" | "router", headers: Record<string, string> = {}) {
  const body = envelope(message);
  const init: RequestInit = { method: "POST", headers: { "content-type": "application/grpc-web+proto", ...headers } };
  init.body =
    via === "sized"
      ? body
      : new ReadableStream({
          start(ctl) {
            ctl.enqueue(body.subarray(0, 2));
            ctl.enqueue(body.subarray(2));
            ctl.close();
          },
        });
  const url = `http://kiln${path}`;
  const res = via === "router" ? await routerOnly(path)!(new Request(url, init)) : await SELF.fetch(url, init);
  return { http: res.status, type: res.headers.get("content-type"), ...splitFrames(new Uint8Array(await res.arrayBuffer())) };
}

/** The call through the worker, with and without a Content-Length, answers exactly as the router alone does. */
export async function sameAsRouter(path: string, message: Uint8Array, what: string, headers: Record<string, string> = {}) {
  const router = await callWorker(path, message, "router", headers);
  expect(router.whole, what).toBe(true);
  for (const via of ["sized", "streamed"] as const) expect(await callWorker(path, message, via, headers), `${what} (${via})`).toEqual(router);
  return router;
}
