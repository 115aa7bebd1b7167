// connect-es answers two client mistakes with INTERNAL (grpc-status 13): a request message that is
// not valid binary protobuf ("parse binary: ...") and an envelope flagged compressed without a
// grpc-encoding ("received compressed envelope, ..."). Its JSON codec says INVALID_ARGUMENT for the
// same kind of mistake. This wrapper rewrites exactly those errors to INVALID_ARGUMENT on the three
// wire forms, and passes everything else through untouched.
// Each chunk of an enveloped response body is one whole envelope (connect-es joins them one by
// one), so only the final trailer / end-stream envelope is ever looked at.
import { Code } from "@connectrpc/connect";
import type { UniversalHandlerFn, UniversalServerResponse } from "@connectrpc/connect/protocol";

const CLIENT_FAULTS = ["parse binary:", "received compressed envelope, but do not know how to decompress"];
const isClientFault = (message: string) => CLIENT_FAULTS.some((p) => message.startsWith(p));
const GRPC_WEB_TRAILER = 0b1000_0000;
const CONNECT_END_STREAM = 0b0000_0010;

const enc = new TextEncoder();
const dec = new TextDecoder();

interface JsonError {
  code?: string;
  message?: string;
}

const isParseError = (e: JsonError | undefined) => e?.code === "internal" && isClientFault(e.message ?? "");

function envelope(flags: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + data.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, data.byteLength);
  out.set(data, 5);
  return out;
}

/** gRPC-web trailers are an HTTP/1 header block: "grpc-status: 13\r\ngrpc-message: ...\r\n". */
function fixGrpcWebTrailer(data: Uint8Array): Uint8Array | undefined {
  const lines = dec.decode(data).split("\r\n");
  const value = (name: string) => lines.find((l) => l.toLowerCase().startsWith(name + ":"))?.slice(name.length + 1).trim();
  let message: string;
  try {
    message = decodeURIComponent(value("grpc-message") ?? "");
  } catch {
    return undefined;
  }
  if (value("grpc-status") !== String(Code.Internal) || !isClientFault(message)) return undefined;
  const fixed = lines.map((l) => (l.toLowerCase().startsWith("grpc-status:") ? `grpc-status: ${Code.InvalidArgument}` : l));
  return enc.encode(fixed.join("\r\n"));
}

function fixConnectEndStream(data: Uint8Array): Uint8Array | undefined {
  const end = JSON.parse(dec.decode(data)) as { error?: JsonError };
  if (!isParseError(end.error)) return undefined;
  end.error!.code = "invalid_argument";
  return enc.encode(JSON.stringify(end));
}

function fixEnvelope(chunk: Uint8Array): Uint8Array {
  if (chunk.byteLength < 5) return chunk;
  const flags = chunk[0]!;
  const data = chunk.subarray(5);
  try {
    const fixed =
      flags & GRPC_WEB_TRAILER ? fixGrpcWebTrailer(data) : flags & CONNECT_END_STREAM ? fixConnectEndStream(data) : undefined;
    return fixed ? envelope(flags, fixed) : chunk;
  } catch {
    return chunk;
  }
}

async function* mapChunks(body: AsyncIterable<Uint8Array>, fn: (c: Uint8Array) => Uint8Array): AsyncIterable<Uint8Array> {
  for await (const chunk of body) yield fn(chunk);
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

/** A unary Connect error is one small JSON body with an HTTP status. */
async function fixUnary(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  const chunks: Uint8Array[] = [];
  for await (const c of res.body!) chunks.push(c);
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let err: JsonError | undefined;
  try {
    err = JSON.parse(dec.decode(bytes)) as JsonError;
  } catch {
    err = undefined;
  }
  if (!isParseError(err)) return { ...res, body: once(bytes) };
  const body = enc.encode(JSON.stringify({ ...err, code: "invalid_argument" }));
  const header = new Headers(res.header);
  header.set("content-length", String(body.byteLength));
  return { ...res, status: 400, header, body: once(body) };
}

export function withParseErrorsAsInvalidArgument(handler: UniversalHandlerFn): UniversalHandlerFn {
  return async (req) => {
    const res = await handler(req);
    if (!res.body) return res;
    const type = res.header?.get("content-type") ?? "";
    if (res.status === 500 && type.startsWith("application/json")) return fixUnary(res);
    if (/^application\/(grpc-web|connect\+)/.test(type)) return { ...res, body: mapChunks(res.body, fixEnvelope) };
    return res;
  };
}
