// One log line per failed call, and errors made safe to send over HTTP/2 (see relayed()).
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { interceptErrors } from "../src/error-interceptor.ts";
import { relayed } from "./errors.ts";

export type Log = (line: string) => void;

/** Logs a call that failed; `path` is "/{service}/{method}". */
export function logFailure(log: Log, path: string, err: ConnectError): void {
  // A cache miss is an answer, not a failure: Bazel asks for many entries that are not there.
  if (err.code === Code.NotFound && path.endsWith("/GetActionResult")) return;
  log(`kiln bridge: ${path.replace(/^\//, "")} failed: ${Code[err.code]}: ${err.rawMessage}`);
}

/** A server interceptor: failures of unary calls and of streams (also mid-stream) pass through here. */
export function reportFailures(log: Log): Interceptor {
  return interceptErrors((e, req) => {
    const err = relayed(e);
    logFailure(log, `/${req.method.parent.typeName}/${req.method.name}`, err);
    return err;
  });
}
