// One WebSocket to one pool shard: `GET {url}/v1/runners/connect?shard=N` with the runner key,
// Hello first, then binary PoolMessage / RunnerMessage frames. It reconnects with backoff when the
// connection drops (the Hello then lists the leases still running), sends the text frame "ping"
// every PING_MS (the pool answers "pong" without waking up) and treats a connection that has been
// silent for DEAD_MS as dropped. Heartbeats for this shard's leases go out every heartbeat_interval
// the pool asked for in its Welcome.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import type { Status } from "../../src/gen/google/rpc/status_pb.ts";
import { Code } from "../../src/shared/status.ts";
import {
  PoolMessageSchema,
  RunnerMessageSchema,
  type Assignment,
  type Cancel,
  type HelloSchema,
  type Progress,
  type Welcome,
} from "../../src/gen/kiln/runner/v1/runner_pb.ts";

export const PING_MS = 30_000;
const DEAD_MS = 2.5 * PING_MS;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** Used until a Welcome says otherwise. */
const DEFAULT_HEARTBEAT_MS = 10_000;

export interface ShardHandlers {
  welcome(shard: number, w: Welcome): void;
  assignment(shard: number, a: Assignment): void;
  cancel(shard: number, c: Cancel): void;
  /** The leases of this shard still running, for the Hello of a reconnect and for heartbeats. */
  running(shard: number): Progress[];
  /** The connection was refused for good (bad key): the runner cannot work. */
  rejected(shard: number, why: string): void;
  log?(line: string): void;
}

export type RunnerMessageInit = MessageInitShape<typeof RunnerMessageSchema>["kind"];

/** The HTTP status the worker gives a plain GET of the connect URL with this key (why an upgrade failed). */
async function probe(url: string, token: string): Promise<number | undefined> {
  try {
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return undefined;
  }
}

export class PoolConnection {
  private ws: WebSocket | undefined;
  private closed = false;
  private failures = 0;
  private lastHeard = 0;
  private heartbeatMs = DEFAULT_HEARTBEAT_MS;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** A Refused was sent on this connection: a Ready is owed when a slot frees. */
  owesReady = false;

  constructor(
    private readonly url: string,
    private readonly token: string,
    readonly shard: number,
    private readonly hello: () => MessageInitShape<typeof HelloSchema>,
    private readonly on: ShardHandlers,
  ) {}

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  private get connectUrl(): string {
    return `${this.url.replace(/\/+$/, "")}/v1/runners/connect?shard=${this.shard}`;
  }

  start(): void {
    if (this.closed) return;
    const httpUrl = this.connectUrl;
    const ws = new WebSocket(httpUrl.replace(/^http/, "ws"), { headers: { authorization: `Bearer ${this.token}` } });
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.lastHeard = Date.now();
      this.send({ case: "hello", value: this.hello() });
      this.pingTimer = setInterval(() => this.ping(), PING_MS);
    };
    ws.onmessage = (ev: MessageEvent) => {
      this.lastHeard = Date.now();
      if (typeof ev.data === "string") return; // "pong"
      this.receive(new Uint8Array(ev.data as ArrayBuffer));
    };
    // A failed upgrade (a 401, say) fires `error` and, with undici, no `close`: either one ends
    // this socket, once.
    const lost = (why: string) => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.stopTimers();
      if (this.closed) return;
      if (!opened) void this.refusedOrRetry();
      else {
        this.on.log?.(`shard ${this.shard}: connection lost (${why}); reconnecting`);
        this.retry();
      }
    };
    ws.onerror = () => lost("error");
    ws.onclose = (ev: CloseEvent) => lost(`${ev.code}${ev.reason ? ` ${ev.reason}` : ""}`);
  }

  /** An upgrade that failed: a bad key ends it, anything else is tried again. */
  private async refusedOrRetry(): Promise<void> {
    const status = await probe(this.connectUrl, this.token);
    if (this.closed) return;
    if (status === 401 || status === 403) {
      this.closed = true;
      this.on.rejected(this.shard, `the worker refused the runner key (HTTP ${status})`);
      return;
    }
    this.on.log?.(`shard ${this.shard}: cannot connect to ${this.connectUrl}${status ? ` (HTTP ${status})` : ""}; retrying`);
    this.retry();
  }

  private retry(): void {
    this.failures++;
    const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.failures - 1));
    // Jitter, so that a fleet dropped at once does not come back at once.
    this.retryTimer = setTimeout(() => this.start(), ms * (0.5 + Math.random() / 2));
  }

  private receive(bytes: Uint8Array): void {
    let msg;
    try {
      msg = fromBinary(PoolMessageSchema, bytes);
    } catch {
      this.on.log?.(`shard ${this.shard}: a frame that is not a PoolMessage (${bytes.byteLength} bytes); ignored`);
      return;
    }
    const k = msg.kind;
    if (k.case === "welcome") {
      this.failures = 0;
      const ms = k.value.heartbeatInterval ? durationMs(k.value.heartbeatInterval) : 0;
      this.heartbeatMs = ms > 0 ? ms : DEFAULT_HEARTBEAT_MS;
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = setInterval(() => this.heartbeat(), this.heartbeatMs);
      this.on.welcome(this.shard, k.value);
    } else if (k.case === "assignment") this.on.assignment(this.shard, k.value);
    else if (k.case === "cancel") this.on.cancel(this.shard, k.value);
    else if (k.case === "goodbye") this.goodbye(k.value);
  }

  private goodbye(status: Status): void {
    this.on.log?.(`shard ${this.shard}: the pool said goodbye: ${status.message || `code ${status.code}`}`);
    // UNAUTHENTICATED, PERMISSION_DENIED: the key is not (or no longer) good; INVALID_ARGUMENT:
    // the Hello is refused, and would be again.
    if (status.code === Code.Unauthenticated || status.code === Code.PermissionDenied || status.code === Code.InvalidArgument) {
      this.closed = true;
      this.on.rejected(this.shard, status.message || "the pool refused this runner");
    }
    this.ws?.close(1000, "goodbye");
  }

  send(kind: RunnerMessageInit): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(toBinary(RunnerMessageSchema, create(RunnerMessageSchema, { kind })));
    return true;
  }

  /** Sends a Heartbeat for this shard's running leases now (also done on every interval). */
  heartbeat(): void {
    const running = this.on.running(this.shard);
    if (running.length > 0) this.send({ case: "heartbeat", value: { running } });
  }

  private ping(): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastHeard > DEAD_MS) {
      this.on.log?.(`shard ${this.shard}: nothing heard for ${Math.round(DEAD_MS / 1000)} s; reconnecting`);
      ws.close(4000, "silent");
      return;
    }
    ws.send("ping");
  }

  private stopTimers(): void {
    clearInterval(this.heartbeatTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.retryTimer);
  }

  close(): void {
    this.closed = true;
    this.stopTimers();
    const ws = this.ws;
    this.ws = undefined;
    ws?.close(1000, "runner stopping");
  }
}
