// One log line per failed call, and errors made safe to send over HTTP/2 (see relayed()).
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, type Interceptor } from "@connectrpc/connect";
import { interceptErrors } from "../src/error-interceptor.ts";
import { relayed } from "./errors.ts";

export type Log = (line: string) => void;

/** A server interceptor: failures of unary calls and of streams (also mid-stream) pass through here. */
export function reportFailures(log: Log): Interceptor {
  const fail = (method: DescMethod, e: unknown) => {
    const err = relayed(e);
    // A cache miss is an answer, not a failure: Bazel asks for many entries that are not there.
    if (err.code === Code.NotFound && method.name === "GetActionResult") return err;
    log(`kiln bridge: ${method.parent.typeName}/${method.name} failed: ${Code[err.code]}: ${err.rawMessage}`);
    return err;
  };
  return interceptErrors((e, req) => fail(req.method, e));
}
