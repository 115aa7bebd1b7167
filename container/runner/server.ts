// The runner's HTTP protocol, spoken to the worker's scheduler (src/execution/runners.ts):
//   POST   /v1/actions        run one action; 200 application/x-protobuf ActionResult, with
//                             x-kiln-status DEADLINE_EXCEEDED | CANCELLED | FAILED_PRECONDITION when it
//                             did not finish normally; JSON errors otherwise (400 INVALID_ARGUMENT,
//                             412 FAILED_PRECONDITION with the missing blobs, 503 at capacity)
//   DELETE /v1/actions/{id}   cancel a running action (its operation's uuid)
//   GET    /v1/status         id, capacity, running, platform properties
import { toBinary } from "@bufbuild/protobuf";
import fs from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import type { AddressInfo } from "node:net";
import { ActionResultSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { defaultOptions, type RunnerOptions } from "./config.ts";
import { parseDigest } from "./digest.ts";
import { asRunnerError, invalidArgument, RunnerError } from "./errors.ts";
import { executeAction, type ActionRequest, type RunnerContext } from "./execute-action.ts";
import { FileCache } from "./file-cache.ts";
import { Limiter } from "./limit.ts";

export interface StartOptions extends Partial<RunnerOptions> {
  /** One line per action and per internal error; silent if unset. */
  log?: (line: string) => void;
}

export interface Runner {
  url: string;
  id: string;
  /** Stops accepting actions, kills running ones, removes their work directories. */
  close(): Promise<void>;
}

const MAX_REQUEST_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10 * 60_000;
const OPERATION_ID = /^[A-Za-z0-9._~-]{1,200}$/;

type Reply = { status: number; headers: Record<string, string>; body: string | Uint8Array };

const json = (status: number, value: unknown, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(value),
});

/** Header values must be printable ASCII. */
const headerSafe = (s: string) => s.replace(/[^\x20-\x7e]/g, "?").slice(0, 1000);

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > MAX_REQUEST_BYTES) throw invalidArgument(`the request body is over ${MAX_REQUEST_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw invalidArgument("the request body is not JSON");
  }
}

/** The POST body: `{operation, casUrl, authorization, instanceName, actionDigest, timeoutMs, queuedAtMs?}`. */
export function parseActionRequest(body: unknown): { id: string; request: ActionRequest } {
  if (!body || typeof body !== "object") throw invalidArgument("the request body is not a JSON object");
  const b = body as Record<string, unknown>;
  const id = typeof b.operation === "string" ? b.operation.split("/").pop()! : "";
  if (!OPERATION_ID.test(id)) throw invalidArgument(`operation ${JSON.stringify(b.operation)} is not operations/{id}`);
  let casUrl: URL;
  try {
    casUrl = new URL(String(b.casUrl));
  } catch {
    throw invalidArgument(`casUrl ${JSON.stringify(b.casUrl)} is not a URL`);
  }
  if (casUrl.protocol !== "http:" && casUrl.protocol !== "https:") throw invalidArgument("casUrl must be http or https");
  if (b.authorization != null && typeof b.authorization !== "string") throw invalidArgument("authorization must be a string or null");
  if (b.instanceName != null && typeof b.instanceName !== "string") throw invalidArgument("instanceName must be a string");
  const timeoutMs = b.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0) throw invalidArgument("timeoutMs must be a positive number");
  const queuedAtMs = b.queuedAtMs;
  if (queuedAtMs != null && (typeof queuedAtMs !== "number" || !Number.isFinite(queuedAtMs))) throw invalidArgument("queuedAtMs must be a number");
  return {
    id,
    request: {
      cas: { casUrl: casUrl.href, instanceName: (b.instanceName as string | undefined) ?? "", authorization: (b.authorization as string | null) ?? null },
      actionDigest: parseDigest(b.actionDigest as { hash?: unknown; sizeBytes?: unknown }, "actionDigest"),
      timeoutMs,
      queuedAtMs: (queuedAtMs as number | undefined) ?? undefined,
    },
  };
}

export async function startRunner(opts: StartOptions = {}): Promise<Runner> {
  const { log, ...rest } = opts;
  const options: RunnerOptions = { ...defaultOptions(), ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)) };
  const cache = new FileCache(options.cacheDir, options.cacheBytes);
  await cache.init();
  await fs.mkdir(options.workDir, { recursive: true });

  const running = new Map<string, AbortController>();
  const inflight = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>) => {
    const q = p.catch((e) => log?.(`background task failed: ${(e as Error)?.message ?? e}`)).finally(() => inflight.delete(q));
    inflight.add(q);
  };
  let slots = 0;
  let closing = false;
  const ctx: RunnerContext = {
    worker: `${os.hostname()}/${options.id}`,
    workDir: options.workDir,
    killGraceMs: options.killGraceMs,
    cache,
    transfers: new Limiter(options.transfers),
    background: track,
  };

  async function runAction(req: http.IncomingMessage, res: http.ServerResponse, release: () => void): Promise<Reply> {
    const { id, request } = parseActionRequest(await readJson(req));
    if (running.has(id)) throw new RunnerError("ALREADY_EXISTS", `operation ${id} is already running here`);
    const abort = new AbortController();
    running.set(id, abort);
    // The scheduler gave up on this request (timeout, restart): nobody will read the result.
    const onClose = () => {
      if (!res.writableEnded) abort.abort();
    };
    res.on("close", onClose);
    const t0 = performance.now();
    try {
      const outcome = await executeAction(ctx, request, abort.signal);
      const headers: Record<string, string> = { "content-type": "application/x-protobuf" };
      if (outcome.status !== "OK") headers["x-kiln-status"] = outcome.status;
      if (outcome.message) headers["x-kiln-message"] = headerSafe(outcome.message);
      log?.(`${id}: ${outcome.status} exit ${outcome.result.exitCode} in ${Math.round(performance.now() - t0)} ms`);
      return { status: 200, headers, body: toBinary(ActionResultSchema, outcome.result) };
    } finally {
      running.delete(id);
      release();
    }
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<Reply> {
    const url = new URL(req.url ?? "/", "http://runner");
    if (url.pathname === "/v1/status" && req.method === "GET") {
      return json(200, { id: options.id, capacity: options.concurrency, running: slots, properties: options.properties });
    }
    if (url.pathname === "/v1/actions" && req.method === "POST") {
      if (closing || slots >= options.concurrency) {
        req.resume();
        return json(
          503,
          { error: { status: "RESOURCE_EXHAUSTED", message: closing ? "the runner is shutting down" : `at capacity: ${slots} of ${options.concurrency} running` } },
          { "retry-after": "1" },
        );
      }
      // The slot is taken before any await and given back before the answer is written, so the
      // scheduler may post the next action the moment it has this one's result.
      slots++;
      let released = false;
      const release = () => {
        if (!released) (released = true), slots--;
      };
      try {
        return await runAction(req, res, release);
      } finally {
        release();
      }
    }
    const m = /^\/v1\/actions\/([^/]+)$/.exec(url.pathname);
    if (m && req.method === "DELETE") {
      const id = decodeURIComponent(m[1]!).split("/").pop()!;
      const abort = running.get(id);
      if (!abort) return json(404, { error: { status: "NOT_FOUND", message: `no running action for operation ${id}` } });
      abort.abort();
      return json(202, { cancelled: id });
    }
    return json(404, { error: { status: "NOT_FOUND", message: `no route for ${req.method} ${url.pathname}` } });
  }

  const server = http.createServer((req, res) => {
    const done = handle(req, res)
      .catch((e): Reply => {
        const err = asRunnerError(e);
        if (err.status === "INTERNAL" || err.status === "UNAVAILABLE") log?.(`${req.method} ${req.url}: ${err.status}: ${err.message}`);
        return json(err.httpStatus, err.toJSON());
      })
      .then((reply) => {
        if (res.destroyed) return;
        res.writeHead(reply.status, { ...reply.headers, "content-length": String(Buffer.byteLength(reply.body)) });
        res.end(reply.body);
      });
    track(done);
  });
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0; // actions run for as long as their timeout allows
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;

  return {
    url: `http://${host}:${address.port}`,
    id: options.id,
    async close() {
      closing = true;
      for (const abort of running.values()) abort.abort();
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      while (inflight.size > 0) await Promise.all([...inflight]);
      server.closeAllConnections();
      await stopped;
    },
  };
}
