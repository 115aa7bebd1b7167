// The executor port: where actions run. Two adapters behind one interface:
// - HTTP runners at RUNNER_URLS (local dev, tests, self-hosted machines): the runner program as a
//   plain process, reached with fetch;
// - the container binding (deployed): RunnerContainer instances, RUNNER_CONTAINERS of them.
// Both speak the runner protocol of container/runner/server.ts.
import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { ActionResultSchema, type ExecuteResponseSchema } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { PreconditionFailureSchema } from "../gen/google/rpc/error_details_pb.ts";
import type { Env } from "../env.ts";
import { publicUrl } from "../config.ts";

export type RunnerRef = { kind: "http"; url: string } | { kind: "container"; name: string };

export interface RunnerInfo {
  ref: RunnerRef;
  capacity: number;
  /** Platform properties the runner offers (name -> values). */
  properties: Record<string, string[]>;
}

export const runnerKey = (r: RunnerRef) => (r.kind === "http" ? r.url : `container:${r.name}`);

export function configuredRunners(env: Env): RunnerRef[] {
  const urls = (env.RUNNER_URLS ?? "").split(",").map((u) => u.trim().replace(/\/$/, "")).filter(Boolean);
  if (urls.length) return urls.map((url) => ({ kind: "http", url }));
  const n = Number(env.RUNNER_CONTAINERS ?? "0");
  if (env.RUNNER && n > 0) return Array.from({ length: n }, (_, i) => ({ kind: "container", name: `runner-${i}` }));
  return [];
}

export function runnerFetch(env: Env, ref: RunnerRef, path: string, init?: RequestInit): Promise<Response> {
  if (ref.kind === "http") return fetch(ref.url + path, init);
  if (!env.RUNNER) throw new Error("no RUNNER container binding");
  return env.RUNNER.get(env.RUNNER.idFromName(ref.name)).fetch(new Request(`http://runner${path}`, init));
}

const infoCache = new Map<string, { at: number; info: RunnerInfo | null }>();
const INFO_TTL_MS = 15_000;

/** Capacity and platform of a runner (cached briefly); null if it does not answer. */
export async function runnerInfo(env: Env, ref: RunnerRef): Promise<RunnerInfo | null> {
  const key = runnerKey(ref);
  const hit = infoCache.get(key);
  if (hit && Date.now() - hit.at < INFO_TTL_MS) return hit.info;
  let info: RunnerInfo | null = null;
  try {
    const res = await runnerFetch(env, ref, "/v1/status", { signal: AbortSignal.timeout(5000) });
    if (res.ok) {
      const body = (await res.json()) as { capacity: number; properties: Record<string, string> };
      const properties: Record<string, string[]> = {};
      for (const [k, v] of Object.entries(body.properties ?? {})) properties[k] = String(v).split("|");
      info = { ref, capacity: Math.max(1, Number(body.capacity) || 1), properties };
    }
  } catch {
    info = null;
  }
  infoCache.set(key, { at: Date.now(), info });
  return info;
}

/** Whether a runner offers every requested platform property. */
export function offers(info: RunnerInfo, platform: [string, string][]): boolean {
  return platform.every(([k, v]) => info.properties[k]?.includes(v));
}

export interface RunRequest {
  operation: string;
  instanceName: string;
  actionDigest: { hash: string; size: number };
  authorization: string | null;
  timeoutMs: number;
  /** When the operation was queued, for ExecutedActionMetadata.queued_timestamp. */
  queuedAtMs: number;
}

export type RunOutcome =
  | { kind: "done"; response: MessageInitShape<typeof ExecuteResponseSchema> }
  | { kind: "busy"; runner: RunnerRef }
  | { kind: "lost"; runner: RunnerRef; reason: string };

/** Time the runner may take beyond the action's own timeout (input fetch, output upload). */
const RUN_OVERHEAD_MS = 5 * 60_000;

const statusCodes: Record<string, Code> = {
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  CANCELLED: Code.Canceled,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  INVALID_ARGUMENT: Code.InvalidArgument,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  UNAUTHENTICATED: Code.Unauthenticated,
  PERMISSION_DENIED: Code.PermissionDenied,
  INTERNAL: Code.Internal,
};

export async function runOnRunner(env: Env, ref: RunnerRef, req: RunRequest): Promise<RunOutcome> {
  let res: Response;
  try {
    res = await runnerFetch(env, ref, "/v1/actions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        operation: req.operation,
        casUrl: publicUrl(env),
        authorization: req.authorization,
        instanceName: req.instanceName,
        actionDigest: { hash: req.actionDigest.hash, sizeBytes: String(req.actionDigest.size) },
        timeoutMs: req.timeoutMs,
        queuedAtMs: req.queuedAtMs,
      }),
      signal: AbortSignal.timeout(req.timeoutMs + RUN_OVERHEAD_MS),
    });
  } catch (e) {
    return { kind: "lost", runner: ref, reason: String((e as Error)?.message ?? e) };
  }
  // 409: an earlier attempt of this operation is still being torn down there; try again shortly.
  if (res.status === 503 || res.status === 409) return { kind: "busy", runner: ref };
  if (res.status === 200) {
    const result = fromBinary(ActionResultSchema, new Uint8Array(await res.arrayBuffer()));
    const status = res.headers.get("x-kiln-status");
    if (!status || status === "OK") return { kind: "done", response: { result } };
    const code = statusCodes[status] ?? Code.Unknown;
    // The runner says why in x-kiln-message (e.g. which output could not be collected).
    const message =
      res.headers.get("x-kiln-message") ??
      (code === Code.DeadlineExceeded ? `the action exceeded its timeout of ${req.timeoutMs / 1000} s` : `the action ended: ${status}`);
    return { kind: "done", response: { result, status: { code, message }, message } };
  }
  // A refusal from the runner (bad action, inputs gone): the operation fails with its status.
  let body: { error?: { status?: string; message?: string; missing?: string[] } } = {};
  try {
    body = await res.json();
  } catch {
    return { kind: "lost", runner: ref, reason: `runner answered HTTP ${res.status}` };
  }
  const code = statusCodes[body.error?.status ?? ""] ?? (res.status >= 500 ? Code.Unavailable : Code.Internal);
  if (res.status >= 500 && code === Code.Unavailable) return { kind: "lost", runner: ref, reason: body.error?.message ?? `HTTP ${res.status}` };
  const message = body.error?.message ?? `runner answered HTTP ${res.status}`;
  // Inputs gone from the CAS: one MISSING violation per blob, so the client uploads them and retries.
  const missing = body.error?.missing ?? [];
  const details = missing.length
    ? [anyPack(PreconditionFailureSchema, create(PreconditionFailureSchema, { violations: missing.map((subject) => ({ type: "MISSING", subject, description: "blob not in the CAS" })) }))]
    : [];
  return { kind: "done", response: { status: { code, message, details }, message } };
}

export async function cancelOnRunner(env: Env, ref: RunnerRef, operation: string): Promise<void> {
  const id = operation.split("/").pop()!;
  await runnerFetch(env, ref, `/v1/actions/${encodeURIComponent(id)}`, { method: "DELETE", signal: AbortSignal.timeout(10_000) });
}
