// A stand-in for the Kiln worker, as the runner sees it, for the runner's Node-side tests: the pool
// WebSocket (`/v1/runners/connect?shard=N`, runner key checked before the upgrade), RunnerService
// (Complete, AppendLog) over connect-node, and an in-memory CAS on the blob HTTP surface with
// FindMissingBlobs, every CAS and RunnerService call checked against the lease token of an
// assignment. Tests drive the pool side by hand: assign, cancel, read what the runner sent.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, Code, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createHash, randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import type { ActionSchema, CommandSchema } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ActionSchema as ActionMsg, CommandSchema as CommandMsg } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import {
  LogStream,
  PoolMessageSchema,
  RunnerMessageSchema,
  RunnerService,
  type CompleteRequest,
  type Hello,
  type RunnerMessage,
} from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { blobKey, type BlobDigest } from "../../src/shared/digest.ts";
import { parseReadResource, parseWriteResource } from "../../src/shared/resource-names.ts";

export interface FakeWorkerOptions {
  runnerKey: string;
  shardCount?: number;
  heartbeatMs?: number;
}

export interface PoolSocket {
  shard: number;
  hello: Hello;
  socket: WebSocket;
  /** Every binary message received on this connection, Hello included. */
  messages: RunnerMessage[];
  /** Text frames ("ping") received. */
  pings: number;
  closed: boolean;
}

interface LeaseRecord {
  id: string;
  instanceName: string;
  token: string;
  shard: number;
  completes: CompleteRequest[];
  logs: Record<"stdout" | "stderr", { data: Buffer; finished: boolean; appends: number }>;
  /** Answer for Complete: accept the first (default), or drop. */
  acceptComplete: boolean;
  /** Complete fails with UNAVAILABLE this many times first (retry tests). */
  failCompletes: number;
}

export interface AssignInit {
  instanceName: string;
  action: MessageInitShape<typeof ActionSchema>;
  command: MessageInitShape<typeof CommandSchema>;
  timeoutMs?: number;
  leaseId?: string;
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

export class FakeWorker {
  url = "";
  readonly sockets: PoolSocket[] = [];
  readonly leases = new Map<string, LeaseRecord>();
  /** Blobs by `{instance}|{hash}/{size}`. */
  readonly blobs = new Map<string, Buffer>();
  /** Blobs (`{hash}/{size}`) whose GET is never answered: staging hangs on them until cancelled. */
  readonly stalled = new Set<string>();
  /** Live output kept per stream (the worker's LIVE_LOG_MAX_BYTES). */
  logCapBytes = 16 * 1024 * 1024;
  /** Requests refused for a bad or foreign token, and 401s of the pool. */
  readonly refusals: string[] = [];
  private readonly waiters = new Set<() => void>();

  private readonly server: http.Server;
  private readonly wss = new WebSocketServer({ noServer: true });

  private constructor(readonly options: Required<FakeWorkerOptions>) {
    const rpc = connectNodeAdapter({ routes: (router: ConnectRouter) => this.routes(router) });
    this.server = http.createServer((req, res) => void this.http(req, res, rpc).catch((e) => (res.writeHead(500), res.end(String(e)))));
    this.server.on("upgrade", (req, socket, head) => this.upgrade(req, socket, head));
  }

  static async start(o: FakeWorkerOptions): Promise<FakeWorker> {
    const self = new FakeWorker({ shardCount: 1, heartbeatMs: 1000, ...o });
    await new Promise<void>((r) => self.server.listen(0, "127.0.0.1", r));
    self.url = `http://127.0.0.1:${(self.server.address() as AddressInfo).port}`;
    return self;
  }

  // ---- what tests call ----

  /** Resolves once `check()` holds (re-checked on every event), or rejects after `ms`. */
  async until<T>(check: () => T | undefined | false, ms = 20_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = check();
      if (v) return v;
      if (Date.now() > deadline) throw new Error("fake worker: condition not reached in time");
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiters.add(() => (clearTimeout(t), r()));
      });
    }
  }

  private notify() {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  /** The open connection of `runnerId` to `shard`. */
  socketOf(runnerId: string, shard = 0): PoolSocket | undefined {
    return this.sockets.findLast((s) => s.hello.runnerId === runnerId && s.shard === shard && !s.closed);
  }

  putBlob(instanceName: string, bytes: Uint8Array): BlobDigest {
    const d = { hash: sha256(bytes), size: bytes.byteLength };
    this.blobs.set(`${instanceName}|${blobKey(d)}`, Buffer.from(bytes));
    return d;
  }

  getBlob(instanceName: string, d: { hash: string; sizeBytes: bigint } | undefined): Buffer | undefined {
    return d ? this.blobs.get(`${instanceName}|${d.hash}/${d.sizeBytes}`) : undefined;
  }

  /** Sends an Assignment on the connection; returns the lease record (Complete lands in `completes`). */
  assign(to: PoolSocket, a: AssignInit): LeaseRecord {
    const id = a.leaseId ?? `lease-${randomUUID()}`;
    const token = `token-${randomUUID()}`;
    const lease: LeaseRecord = this.leases.get(id) ?? {
      id,
      instanceName: a.instanceName,
      token,
      shard: to.shard,
      completes: [],
      logs: { stdout: { data: Buffer.alloc(0), finished: false, appends: 0 }, stderr: { data: Buffer.alloc(0), finished: false, appends: 0 } },
      acceptComplete: true,
      failCompletes: 0,
    };
    this.leases.set(id, lease);
    const action = create(ActionMsg, a.action);
    const command = create(CommandMsg, a.command);
    const actionBytes = toBinary(ActionMsg, action);
    this.send(to, {
      case: "assignment",
      value: {
        leaseId: id,
        operation: `operations/${randomUUID()}`,
        attempt: 1,
        instanceName: a.instanceName,
        actionDigest: { hash: sha256(actionBytes), sizeBytes: BigInt(actionBytes.byteLength) },
        action,
        command,
        timeout: durationFromMs(a.timeoutMs ?? 60_000),
        token: lease.token,
        stdoutStreamName: `${a.instanceName}/logs/${id}/stdout`,
        stderrStreamName: `${a.instanceName}/logs/${id}/stderr`,
      },
    });
    return lease;
  }

  cancel(to: PoolSocket, leaseId: string) {
    this.send(to, { case: "cancel", value: { leaseId, reason: "test" } });
  }

  send(to: PoolSocket, kind: MessageInitShape<typeof PoolMessageSchema>["kind"]) {
    to.socket.send(toBinary(PoolMessageSchema, create(PoolMessageSchema, { kind })));
  }

  /** Messages of one kind received on a connection. */
  received<K extends RunnerMessage["kind"]["case"]>(s: PoolSocket, kind: K) {
    return s.messages.filter((m) => m.kind.case === kind).map((m) => m.kind.value as Extract<RunnerMessage["kind"], { case: K }>["value"]);
  }

  async stop() {
    for (const s of this.sockets) s.socket.terminate();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  // ---- the pool WebSocket ----

  private upgrade(req: http.IncomingMessage, socket: import("node:stream").Duplex, head: Buffer) {
    const url = new URL(req.url ?? "/", "http://x");
    const shard = Number(url.searchParams.get("shard") ?? "0");
    if (url.pathname !== "/v1/runners/connect" || req.headers.authorization !== `Bearer ${this.options.runnerKey}`) {
      this.refusals.push(`pool: ${req.headers.authorization ?? "no key"}`);
      socket.end("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      let conn: PoolSocket | undefined;
      ws.on("message", (data, isBinary) => {
        if (!isBinary) {
          if (data.toString() === "ping") ws.send("pong");
          if (conn) conn.pings++;
          this.notify();
          return;
        }
        const msg = fromBinary(RunnerMessageSchema, new Uint8Array(data as Buffer));
        if (!conn) {
          if (msg.kind.case !== "hello") return void ws.close(4400, "Hello first");
          conn = { shard, hello: msg.kind.value, socket: ws, messages: [], pings: 0, closed: false };
          this.sockets.push(conn);
          this.send(conn, {
            case: "welcome",
            value: { heartbeatInterval: durationFromMs(this.options.heartbeatMs), leaseDuration: durationFromMs(this.options.heartbeatMs * 3), shard, shardCount: this.options.shardCount },
          });
        }
        conn.messages.push(msg);
        this.notify();
      });
      ws.on("close", () => {
        if (conn) conn.closed = true;
        this.notify();
      });
    });
  }

  // ---- HTTP: RunnerService and the CAS ----

  private leaseOf(authorization: string | undefined | null): LeaseRecord | undefined {
    const token = /^Bearer (.+)$/.exec(authorization ?? "")?.[1];
    return [...this.leases.values()].find((l) => l.token === token);
  }

  private routes(router: ConnectRouter) {
    const check = (leaseId: string, headers: Headers) => {
      const lease = this.leaseOf(headers.get("authorization"));
      if (!lease || lease.id !== leaseId) {
        this.refusals.push(`rpc: lease ${leaseId}`);
        throw new ConnectError("not this lease's token", Code.Unauthenticated);
      }
      return lease;
    };
    router.service(RunnerService, {
      complete: (req, ctx) => {
        const lease = check(req.leaseId, ctx.requestHeader);
        if (lease.failCompletes > 0) {
          lease.failCompletes--;
          throw new ConnectError("try again", Code.Unavailable);
        }
        lease.completes.push(req);
        this.notify();
        const accepted = lease.acceptComplete && lease.completes.length === 1;
        return { accepted, reason: accepted ? "" : "lease no longer current" };
      },
      appendLog: (req, ctx) => {
        const lease = check(req.leaseId, ctx.requestHeader);
        const log = lease.logs[req.stream === LogStream.STDERR ? "stderr" : "stdout"];
        const offset = Number(req.offset);
        // A gap (bytes the worker lost) is answered with the size held, as the worker does.
        if (offset > log.data.byteLength) return { committedSize: BigInt(log.data.byteLength) };
        // A repeat of bytes already held is applied once; nothing beyond the cap is kept.
        const fresh = Buffer.from(req.data).subarray(log.data.byteLength - offset, this.logCapBytes - offset);
        log.data = Buffer.concat([log.data, fresh]);
        log.appends++;
        if (req.finished) log.finished = true;
        this.notify();
        return { committedSize: BigInt(log.data.byteLength) };
      },
    });
  }

  private async http(req: http.IncomingMessage, res: http.ServerResponse, rpc: http.RequestListener): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname.startsWith("/kiln.runner.v1.RunnerService/")) return rpc(req, res);
    if (url.pathname === "/v1/runners/connect") {
      const ok = req.headers.authorization === `Bearer ${this.options.runnerKey}`;
      res.writeHead(ok ? 426 : 401).end();
      return;
    }
    const lease = this.leaseOf(req.headers.authorization);
    const deny = (why: string) => {
      this.refusals.push(`cas: ${why}`);
      res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ error: { status: "UNAUTHENTICATED", message: why } }));
    };
    const body = async () => {
      const chunks: Buffer[] = [];
      for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
      return Buffer.concat(chunks);
    };
    if (url.pathname === "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs") {
      const q = JSON.parse((await body()).toString()) as { instanceName: string; blobDigests: { hash: string; sizeBytes: string }[] };
      if (!lease || lease.instanceName !== q.instanceName) return deny(`FindMissingBlobs in ${q.instanceName}`);
      const missing = q.blobDigests.filter((d) => !this.blobs.has(`${q.instanceName}|${d.hash}/${d.sizeBytes}`));
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ missingBlobDigests: missing }));
      return;
    }
    const name = decodeURIComponent(url.pathname.slice(1));
    if (req.method === "GET") {
      const r = parseReadResource(name);
      if (!lease || lease.instanceName !== r.instanceName) return deny(`GET ${name}`);
      if (this.stalled.has(blobKey(r.digest))) return; // left hanging
      const blob = this.blobs.get(`${r.instanceName}|${blobKey(r.digest)}`);
      if (!blob) return void res.writeHead(404).end();
      res.writeHead(200, { "content-length": String(blob.byteLength) }).end(blob);
      return;
    }
    if (req.method === "PUT") {
      const w = parseWriteResource(name);
      if (!lease || lease.instanceName !== w.instanceName) return deny(`PUT ${name}`);
      const bytes = await body();
      if (sha256(bytes) !== w.digest.hash || bytes.byteLength !== w.digest.size) return void res.writeHead(400).end("digest mismatch");
      this.blobs.set(`${w.instanceName}|${blobKey(w.digest)}`, bytes);
      res.writeHead(200).end("{}");
      return;
    }
    res.writeHead(404).end();
  }
}
