// Generic forwarding: every method of a service is served to native gRPC clients and called on
// the worker as gRPC-web over HTTP/1.1, message for message, with the caller's metadata, deadline
// and cancellation.
import type {
  DescMessage,
  DescMethod,
  DescMethodBiDiStreaming,
  DescMethodClientStreaming,
  DescMethodServerStreaming,
  DescMethodUnary,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext, type Transport } from "@connectrpc/connect";
import { forwardedMetadata } from "./metadata.ts";

// protobuf-es types a generic DescMethod with a plain methodKind field; this union lets the
// switch below narrow it to the typed method each kind of handler needs.
type KindedMethod = DescMethodUnary | DescMethodServerStreaming | DescMethodClientStreaming | DescMethodBiDiStreaming;

/** Registers `descMethod` on the router as a relay to the same method upstream. */
export function forwardMethod(router: ConnectRouter, descMethod: DescMethod, upstream: Transport): void {
  const method = descMethod as KindedMethod;
  switch (method.methodKind) {
    case "unary":
      router.rpc(method, async (req, ctx) => {
        const res = await upstream.unary(method, ctx.signal, ctx.timeoutMs(), forwardedMetadata(ctx.requestHeader), req);
        return res.message;
      });
      return;
    case "server_streaming":
      router.rpc(method, (req, ctx) => forwardServerStream(upstream, method, req, ctx));
      return;
    case "client_streaming":
      router.rpc(method, (reqs, ctx) => forwardClientStream(upstream, method, reqs, ctx));
      return;
    case "bidi_streaming":
      // The hop to the worker is HTTP/1.1, which is half-duplex: a bidi call cannot cross it.
      router.rpc(method, () => {
        throw new ConnectError(`${method.parent.typeName}/${method.name} (bidi streaming) is not available through the bridge`, Code.Unimplemented);
      });
      return;
  }
}

/** Relays a server stream, each message as the worker sends it: Execute and WaitExecution stream for minutes. */
export async function* forwardServerStream<I extends DescMessage, O extends DescMessage>(
  upstream: Transport,
  method: DescMethodServerStreaming<I, O>,
  request: MessageInitShape<I>,
  ctx: HandlerContext,
): AsyncGenerator<MessageShape<O>> {
  try {
    const res = await upstream.stream(method, ctx.signal, ctx.timeoutMs(), forwardedMetadata(ctx.requestHeader), once(request));
    yield* res.message;
  } catch (e) {
    throw asRetryable(e, ctx);
  }
}

/**
 * The worker's side of the stream broke (it restarted or redeployed): connect-node calls that
 * ABORTED (or, for a request body it was still writing, INTERNAL "write EPIPE"), which clients
 * take for a final answer. It is the textbook UNAVAILABLE: retry (Bazel
 * follows a broken Execute with WaitExecution). A caller's own cancellation stays CANCELLED.
 */
function asRetryable(e: unknown, ctx: HandlerContext): unknown {
  if (ctx.signal.aborted || !(e instanceof ConnectError) || !(e.code === Code.Aborted || brokePipe(e))) return e;
  return new ConnectError(`the connection to the worker broke (${e.rawMessage}); retry`, Code.Unavailable, undefined, undefined, e);
}

/** connect-node calls a write to a connection the worker closed (EPIPE) INTERNAL; it is a broken connection. */
function brokePipe(e: ConnectError): boolean {
  for (let c: unknown = e.cause, depth = 0; c instanceof Error && depth < 8; c = c.cause, depth++) {
    if ((c as NodeJS.ErrnoException).code === "EPIPE") return true;
  }
  return false;
}

/** Relays a client stream; connect-node sends it upstream as a streamed HTTP/1.1 request body. */
export async function forwardClientStream<I extends DescMessage, O extends DescMessage>(
  upstream: Transport,
  method: DescMethodClientStreaming<I, O>,
  requests: AsyncIterable<MessageInitShape<I>>,
  ctx: HandlerContext,
): Promise<MessageShape<O>> {
  let answer: MessageShape<O> | undefined;
  try {
    const res = await upstream.stream(method, ctx.signal, ctx.timeoutMs(), forwardedMetadata(ctx.requestHeader), requests);
    for await (const message of res.message) {
      if (answer) throw new ConnectError("the worker sent more than one response to a client stream", Code.Internal);
      answer = message;
    }
  } catch (e) {
    throw asRetryable(e, ctx);
  }
  if (!answer) throw new ConnectError("the worker sent no response to a client stream", Code.Internal);
  return answer;
}

async function* once<T>(message: T): AsyncGenerator<T> {
  yield message;
}
