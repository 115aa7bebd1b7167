// Which request headers of a native gRPC call travel on to the worker.

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
