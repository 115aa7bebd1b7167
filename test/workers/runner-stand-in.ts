/// <reference types="node" />
// A scripted stand-in for the Kiln runner, for the workerd tests of remote execution. It speaks
// the runner protocol (GET /v1/status, POST /v1/actions, DELETE /v1/actions/<uuid>) but runs
// nothing: what each POST does is chosen by the request's instance name, which must contain an
// "exec" segment followed by a behaviour segment ("exec/sleep-3000/<unique>"):
//
//   ok              answers at once: exit code 0
//   sleep-<ms>      answers after <ms> (DELETE ends it early with x-kiln-status CANCELLED)
//   exit-<n>        answers at once: exit code <n>
//   timeout         waits the request's timeoutMs (at most 5 s), then answers with
//                   x-kiln-status DEADLINE_EXCEEDED and a result that keeps its stdout digest
//   lost            destroys the socket, every time
//   busy-<n>        503 for the first <n> POSTs of an operation, then ok
//   busy-<n>+lost-<m>  503 <n> times, then destroys the socket <m> times, then ok
//   reject-412      412 FAILED_PRECONDITION with a "missing" list (inputs gone from the CAS)
//   bad-output      answers at once: exit code 0 but x-kiln-status FAILED_PRECONDITION and an
//                   x-kiln-message (an output could not be collected)
//
// Results reference stdout `stdout of <action hash>\n` and one output file "out" with contents
// `output of <action hash>\n`; a test uploads those blobs itself (as a real runner would) when it
// wants the result to be servable from the action cache.
//
// Test-only endpoints, for assertions:
//   GET /test/runs?operation=&action=&instance=  every POST received (filtered), in arrival order,
//                                                and the most runs of that instance at once
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { ActionResultSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";

/** KILN_STAND_IN_PORT lets two workerd test runs share a machine. */
export const STAND_IN_PORT = Number(process.env.KILN_STAND_IN_PORT ?? 18765);
export const STAND_IN_URL = `http://127.0.0.1:${STAND_IN_PORT}`;
/**
 * The capacity /v1/status reports, which the scheduler plans with. The stand-in itself only
 * refuses (503) beyond HARD_LIMIT concurrent runs, so that test files running side by side do not
 * see each other's load; busy-<n> scripts refusals explicitly.
 */
export const STAND_IN_CAPACITY = 2;
const HARD_LIMIT = 64;

export interface Attempt {
  /** Global arrival order of POSTs. */
  seq: number;
  operation: string;
  instanceName: string;
  behaviour: string;
  actionHash: string;
  timeoutMs: number;
  /** The authorization the POST carried, for the CAS on the caller's behalf (null when the service is open). */
  authorization: string | null;
  startedAt: number;
  endedAt?: number;
  outcome: "running" | "ok" | "exit" | "deadline" | "cancelled" | "busy" | "lost" | "rejected" | "abandoned";
}

interface Running {
  attempt: Attempt;
  finish: (outcome: "ok" | "cancelled") => void;
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const digestOf = (s: string) => ({ hash: sha256(s), sizeBytes: BigInt(Buffer.byteLength(s)) });

function resultFor(hash: string, exitCode: number) {
  return toBinary(
    ActionResultSchema,
    create(ActionResultSchema, {
      exitCode,
      stdoutDigest: digestOf(`stdout of ${hash}\n`),
      outputFiles: [{ path: "out", digest: digestOf(`output of ${hash}\n`) }],
      executionMetadata: { worker: "stand-in" },
    }),
  );
}

function behaviourOf(instanceName: string): string {
  const segs = instanceName.split("/");
  const i = segs.indexOf("exec");
  return i >= 0 && segs[i + 1] ? segs[i + 1]! : "ok";
}

async function readJson(req: IncomingMessage): Promise<any> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
}

function json(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

export function startStandIn(port = STAND_IN_PORT): Promise<{ server: Server; close: () => Promise<void> }> {
  const attempts: Attempt[] = [];
  const running = new Map<string, Running>(); // by operation uuid
  const postsPerOperation = new Map<string, number>();
  const concurrent = new Map<string, { now: number; max: number }>();
  let seq = 0;

  const track = (instance: string, delta: number) => {
    const c = concurrent.get(instance) ?? { now: 0, max: 0 };
    c.now += delta;
    c.max = Math.max(c.max, c.now);
    concurrent.set(instance, c);
  };

  async function post(req: IncomingMessage, res: ServerResponse) {
    const body = await readJson(req);
    const operation = String(body.operation ?? "");
    const id = operation.split("/").pop() ?? "";
    const instanceName = String(body.instanceName ?? "");
    const behaviour = behaviourOf(instanceName);
    const actionHash = String(body.actionDigest?.hash ?? "");
    const timeoutMs = Number(body.timeoutMs ?? 0);
    const n = (postsPerOperation.get(operation) ?? 0) + 1;
    postsPerOperation.set(operation, n);
    const attempt: Attempt = {
      seq: ++seq,
      operation,
      instanceName,
      behaviour,
      actionHash,
      timeoutMs,
      authorization: body.authorization ?? null,
      startedAt: Date.now(),
      outcome: "running",
    };
    attempts.push(attempt);
    const end = (outcome: Attempt["outcome"]) => {
      attempt.outcome = outcome;
      attempt.endedAt = Date.now();
    };

    // Scripted refusals and losses, by the POST's number within its operation.
    let busy = 0;
    let lost = 0;
    for (const part of behaviour.split("+")) {
      const m = /^(busy|lost)-(\d+)$/.exec(part);
      if (m) (m[1] === "busy" ? (busy = Number(m[2])) : (lost = Number(m[2])));
    }
    if (behaviour === "lost") lost = Infinity;
    if (n <= busy || running.size >= HARD_LIMIT) {
      end("busy");
      res.setHeader("retry-after", "1");
      return json(res, 503, { error: { status: "RESOURCE_EXHAUSTED", message: "the stand-in is at capacity" } });
    }
    if (n <= busy + lost) {
      end("lost");
      req.socket.destroy();
      return;
    }
    if (behaviour === "reject-412") {
      end("rejected");
      return json(res, 412, {
        error: { status: "FAILED_PRECONDITION", message: "an input vanished from the CAS", missing: [`blobs/${sha256("vanished")}/8`] },
      });
    }
    if (behaviour === "bad-output") {
      end("exit");
      res.writeHead(200, {
        "content-type": "application/x-protobuf",
        "x-kiln-status": "FAILED_PRECONDITION",
        "x-kiln-message": "output file out is a directory",
      });
      return res.end(resultFor(actionHash, 0));
    }
    const exit = /^exit-(\d+)$/.exec(behaviour);
    if (exit) {
      end("exit");
      res.writeHead(200, { "content-type": "application/x-protobuf" });
      return res.end(resultFor(actionHash, Number(exit[1])));
    }

    const sleep = /^sleep-(\d+)$/.exec(behaviour);
    const waitMs = behaviour === "timeout" ? Math.min(timeoutMs, 5000) : sleep ? Number(sleep[1]) : 0;
    track(instanceName, +1);
    await new Promise<void>((resolve) => {
      let settled = false;
      const finish = (outcome: "ok" | "cancelled" | "abandoned") => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        running.delete(id);
        track(instanceName, -1);
        if (outcome === "abandoned") {
          end("abandoned");
        } else if (outcome === "cancelled") {
          end("cancelled");
          res.writeHead(200, { "content-type": "application/x-protobuf", "x-kiln-status": "CANCELLED", "x-kiln-message": "the action was cancelled" });
          res.end(resultFor(actionHash, 137));
        } else if (behaviour === "timeout") {
          end("deadline");
          res.writeHead(200, {
            "content-type": "application/x-protobuf",
            "x-kiln-status": "DEADLINE_EXCEEDED",
            "x-kiln-message": `the action exceeded its timeout of ${timeoutMs / 1000} s`,
          });
          res.end(resultFor(actionHash, 137));
        } else {
          end("ok");
          res.writeHead(200, { "content-type": "application/x-protobuf" });
          res.end(resultFor(actionHash, 0));
        }
        resolve();
      };
      const timer = setTimeout(() => finish("ok"), waitMs);
      running.set(id, { attempt, finish });
      res.on("close", () => finish("abandoned"));
    });
  }

  // As the real runner: only a running action can be cancelled.
  function cancel(id: string, res: ServerResponse) {
    const r = running.get(id);
    if (!r) return json(res, 404, { error: { status: "NOT_FOUND", message: `no running action for operation ${id}` } });
    r.finish("cancelled");
    return json(res, 202, { cancelled: id });
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", `http://127.0.0.1:${port}`);
    const route = `${req.method} ${url.pathname}`;
    (async () => {
      if (route === "GET /v1/status") {
        return json(res, 200, {
          id: "stand-in",
          capacity: STAND_IN_CAPACITY,
          running: running.size,
          properties: { OSFamily: "linux", ISA: "x86-64|x86-avx2" },
        });
      }
      if (route === "POST /v1/actions") return post(req, res);
      if (req.method === "DELETE" && url.pathname.startsWith("/v1/actions/")) {
        return cancel(decodeURIComponent(url.pathname.slice("/v1/actions/".length)), res);
      }
      if (route === "GET /test/runs") {
        const op = url.searchParams.get("operation");
        const action = url.searchParams.get("action");
        const instance = url.searchParams.get("instance");
        const list = attempts.filter(
          (a) => (!op || a.operation === op) && (!action || a.actionHash === action) && (!instance || a.instanceName === instance),
        );
        return json(res, 200, { attempts: list, maxConcurrent: instance ? (concurrent.get(instance)?.max ?? 0) : null });
      }
      return json(res, 404, { error: { status: "NOT_FOUND", message: `no route ${route}` } });
    })().catch((e) => {
      if (!res.headersSent) json(res, 500, { error: { status: "INTERNAL", message: String(e) } });
    });
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () =>
      resolve({
        server,
        close: () =>
          new Promise<void>((r) => {
            for (const run of running.values()) run.finish("cancelled");
            server.closeAllConnections();
            server.close(() => r());
          }),
      }),
    );
  });
}
