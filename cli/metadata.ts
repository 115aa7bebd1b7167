// Which request headers of a native gRPC call travel on to the worker, and the key the bridge or
// upload-bep adds where a client cannot send one.
import type { Interceptor } from "@connectrpc/connect";

/**
 * The call metadata a client meant for the server: `authorization`, `x-*` and binary `*-bin`
 * entries (e.g. build.bazel.remote.execution.v2.requestmetadata-bin). Transport headers
 * (content-type, te, grpc-timeout, grpc-encoding, user-agent, ...) stay behind: the upstream
 * transport writes its own, and the deadline is passed on separately as a timeout.
 */
export function forwardedMetadata(requestHeader: Headers): Headers {
  const out = new Headers();
  requestHeader.forEach((value, key) => {
    if (key.startsWith("grpc-")) return;
    if (key === "authorization" || key.startsWith("x-") || key.endsWith("-bin")) out.append(key, value);
  });
  return out;
}

/** A client interceptor: `Authorization: Bearer key` on calls that carry no authorization of their own. */
export const withKey =
  (key: string): Interceptor =>
  (next) =>
  (req) => {
    if (!req.header.has("authorization")) req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
