// A connect-es interceptor that passes every error of a call through one function: errors of unary
// calls, of a stream's start, and of a stream mid-way. Platform-free: the worker (request ids)
// and `kiln bridge` (failure log) both use it.
import type { Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";

export function interceptErrors(fail: (e: unknown, req: UnaryRequest | StreamRequest) => unknown): Interceptor {
  return (next) => async (req) => {
    const res = await next(req).catch((e: unknown) => {
      throw fail(e, req);
    });
    if (!res.stream) return res;
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } catch (e) {
          throw fail(e, req);
        }
      })(),
    };
  };
}
