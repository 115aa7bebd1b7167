// ByteStream.Write without holding the blob: a fresh upload (write_offset 0) goes to the worker as
// one streamed HTTP PUT of its bytes to the upload's resource name, which the worker stores the
// same way as a Write (resumably, for large blobs). Anything else (a resumed upload, a name we do
// not understand) is relayed as the gRPC-web client stream it is, and the worker answers it.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type Transport } from "@connectrpc/connect";
import {
  ByteStream,
  type WriteRequest,
  type WriteResponseSchema,
} from "../src/gen/google/bytestream/bytestream_pb.ts";
import { fromHttpError } from "./errors.ts";
import { forwardClientStream } from "./forward.ts";
import { forwardedMetadata } from "./metadata.ts";

type WriteResponseInit = MessageInitShape<typeof WriteResponseSchema>;

/** The blob size of `{instance}/uploads/{uuid}/blobs/{hash}/{size}[/...]`; undefined: let the worker judge the name. */
export function uploadSize(resourceName: string): number | undefined {
  const segs = resourceName.split("/");
  const i = segs.indexOf("uploads");
  if (i < 0 || segs[i + 2] !== "blobs") return undefined;
  const size = segs[i + 4] ?? "";
  return /^\d{1,15}$/.test(size) ? Number(size) : undefined;
}

export function byteStreamWrite(upstreamUrl: string, upstream: Transport) {
  const base = upstreamUrl.replace(/\/+$/, "");
  return async (requests: AsyncIterable<WriteRequest>, ctx: HandlerContext): Promise<WriteResponseInit> => {
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    const head = first.done ? undefined : first.value;
    const size = head && head.writeOffset === 0n ? uploadSize(head.resourceName) : undefined;
    if (!head || size === undefined) {
      return forwardClientStream(upstream, ByteStream.method.write, replay(head, it), ctx);
    }
    return put(`${base}/${head.resourceName.split("/").map(encodeURIComponent).join("/")}`, size, head, it, ctx);
  };
}

async function put(url: string, size: number, head: WriteRequest, rest: AsyncIterator<WriteRequest>, ctx: HandlerContext): Promise<WriteResponseInit> {
  const body = new WriteBody(head, rest, size);
  const headers = forwardedMetadata(ctx.requestHeader);
  headers.set("content-type", "application/octet-stream");
  headers.set("content-length", String(size));
  let res: Response;
  try {
    res = await fetch(url, { method: "PUT", body: body.stream, headers, signal: ctx.signal, duplex: "half" });
  } catch (e) {
    if (body.failure) throw body.failure;
    // The client hung up or its deadline passed: fetch was aborted through ctx.signal.
    if (ctx.signal.aborted) throw ConnectError.from(ctx.signal.reason ?? "the client cancelled", Code.Canceled);
    throw new ConnectError(`PUT to the worker failed: ${causeOf(e)}`, Code.Unavailable, undefined, undefined, e);
  } finally {
    // The worker may answer before reading everything (the blob already exists): stop reading the client.
    body.stop();
  }
  if (!res.ok) throw await fromHttpError(res);
  await res.body?.cancel();
  return { committedSize: BigInt(size) };
}

/**
 * The bytes of a Write's messages as a request body, checked on the way as the worker checks
 * a Write (offsets contiguous, one resource name, no more than the declared size, finish_write
 * exactly at the end), because a short or long body would otherwise fail as a bare Content-Length
 * mismatch instead of the INVALID_ARGUMENT a client expects.
 */
class WriteBody {
  readonly stream: ReadableStream<Uint8Array>;
  failure: ConnectError | undefined;
  private next: WriteRequest | undefined;
  private offset = 0;
  private finished = false;

  constructor(
    head: WriteRequest,
    private readonly rest: AsyncIterator<WriteRequest>,
    private readonly size: number,
  ) {
    this.next = head;
    const resourceName = head.resourceName;
    this.stream = new ReadableStream<Uint8Array>({
      pull: async (ctl) => {
        try {
          const chunk = await this.read(resourceName);
          if (chunk === undefined) ctl.close();
          else ctl.enqueue(chunk);
        } catch (e) {
          this.failure = e instanceof ConnectError ? e : ConnectError.from(e, Code.Canceled);
          ctl.error(this.failure);
        }
      },
    });
  }

  stop() {
    void this.rest.return?.();
  }

  private async pull(): Promise<WriteRequest | undefined> {
    const r = await this.rest.next();
    return r.done ? undefined : r.value;
  }

  /** The next non-empty data, or undefined at the end of the blob. */
  private async read(resourceName: string): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.finished) return undefined;
      const req = this.next ?? (await this.pull());
      this.next = undefined;
      if (!req) throw invalid(`the stream ended at ${this.offset} bytes without finish_write`);
      if (req.resourceName && req.resourceName !== resourceName) {
        throw invalid(`resource_name changed within one Write to "${req.resourceName.slice(0, 200)}"`);
      }
      if (req.writeOffset !== BigInt(this.offset)) throw invalid(`write_offset ${req.writeOffset} where ${this.offset} was expected`);
      this.offset += req.data.byteLength;
      if (this.offset > this.size) throw invalid(`more than the ${this.size} bytes the resource name declares`);
      this.finished = req.finishWrite;
      if (req.finishWrite && this.offset !== this.size) {
        throw invalid(`finish_write at ${this.offset} bytes where the resource name declares ${this.size}`);
      }
      if (req.data.byteLength) return req.data;
    }
  }
}

const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);

async function* replay(head: WriteRequest | undefined, rest: AsyncIterator<WriteRequest>): AsyncGenerator<WriteRequest> {
  if (!head) return;
  yield head;
  for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
}

const causeOf = (e: unknown) => (e instanceof Error && e.cause instanceof Error ? e.cause.message : String(e));
