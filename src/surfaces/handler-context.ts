// Surfaces other than Connect call the same service methods; they hand them a HandlerContext
// built from the plain HTTP request, so authentication reads the same headers everywhere.
import type { DescMethod } from "@bufbuild/protobuf";
import { createHandlerContext, type HandlerContext } from "@connectrpc/connect";

export const contextFor = (req: Request, method: DescMethod, protocolName: string): HandlerContext =>
  createHandlerContext({
    service: method.parent,
    method,
    protocolName,
    requestMethod: req.method,
    url: req.url,
    requestHeader: req.headers,
    requestSignal: req.signal,
  });
