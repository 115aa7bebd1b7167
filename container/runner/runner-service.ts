// RunnerService as the runner calls it: connect-es over the Connect protocol (HTTP/1.1, the way
// the worker is reached through any proxy), each call authorized with the lease token of the one
// action it is about. Complete is retried until it lands: a lost result costs a whole re-run.
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { ExecuteResponse } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import type { Status } from "../../src/gen/google/rpc/status_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { RunnerService, type AppendLogRequest, type AppendLogRequestSchema, type CompleteResponse } from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { Code, ConnectError } from "./errors.ts";

/** Worth another attempt: the worker or the network, not the request. */
export const isTransient = (e: unknown) =>
  !(e instanceof ConnectError) || [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Internal, Code.Aborted].includes(e.code);

const COMPLETE_ATTEMPTS = 12;
const CALL_TIMEOUT_MS = 60_000;
/** Live output is worth little once late. */
const APPEND_TIMEOUT_MS = 10_000;

export type Outcome = { response: ExecuteResponse } | { error: Status };

export class RunnerServiceClient {
  private readonly client: Client<typeof RunnerService>;

  constructor(
    url: string,
    /** Waits between attempts; an abort ends the wait at once. */
    private readonly sleep = (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, ms);
        signal?.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
      }),
  ) {
    this.client = createClient(RunnerService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
  }

  /**
   * Sends the outcome, retrying transient failures with backoff (0.25 s doubling to 30 s, about
   * 3 minutes in all). Resolves with the answer (`accepted: false`: the lease is gone, the result
   * is dropped); throws on a permanent refusal, when every attempt failed, or once `signal` aborts
   * (the runner is stopping: the lease lapses and the pool runs the action again).
   */
  async complete(leaseId: string, token: string, outcome: Outcome, signal?: AbortSignal): Promise<CompleteResponse> {
    const outcomeInit = "response" in outcome ? { case: "response" as const, value: outcome.response } : { case: "error" as const, value: outcome.error };
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.client.complete({ leaseId, outcome: outcomeInit }, { headers: auth(token), timeoutMs: CALL_TIMEOUT_MS, signal });
      } catch (e) {
        if (!isTransient(e) || attempt >= COMPLETE_ATTEMPTS || signal?.aborted) throw e;
        await this.sleep(Math.min(30_000, 250 * 2 ** (attempt - 1)), signal);
      }
    }
  }

  /** One AppendLog call; the caller retries (the offset makes a repeat harmless). */
  async appendLog(token: string, req: MessageInitShape<typeof AppendLogRequestSchema> & Pick<AppendLogRequest, "leaseId">): Promise<bigint> {
    const res = await this.client.appendLog(req, { headers: auth(token), timeoutMs: APPEND_TIMEOUT_MS });
    return res.committedSize;
  }
}

const auth = (token: string) => ({ authorization: `Bearer ${token}` });
