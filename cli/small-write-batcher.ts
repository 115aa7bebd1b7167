// Group commit of small blobs: many ByteStream Writes of small blobs become few BatchUpdateBlobs.
//
// Each request to the worker costs it a whole request's work (routing, auth, rate limit, access
// log) and an index call, whatever it carries; for a 1 KiB blob that overhead is nearly all of it.
// So Writes that may share one upstream request (same lane: same instance, same credentials) are
// sent together. No timer: with nothing of its lane on the way, a blob goes at once (a lone writer
// never waits); otherwise it queues, and leaves with everything queued when a batch returns, or
// sooner, as a further batch in flight, once `fill` blobs have gathered (a full batch always goes).
// Without that floor a free slot takes each blob alone as it comes, and a lane settles into one
// large batch and a stream of single-blob requests (measured: no faster than a request per Write).
import { Code, ConnectError } from "@connectrpc/connect";

export interface SmallBlob {
  hash: string;
  size: number;
  data: Uint8Array;
}

/** One upstream call: a verdict per blob, in order (undefined: stored). A rejection fails them all. */
export type SendBatch<L> = (lane: L, blobs: readonly SmallBlob[], timeoutMs: number | undefined) => Promise<readonly (ConnectError | undefined)[]>;

export interface BatchLimits {
  /** Batches of one lane on their way at once. */
  inFlight: number;
  /** Blobs it takes to send a batch while another of its lane is on the way. */
  fill: number;
  /** Blobs per batch; a full batch leaves at once, however many are in flight. */
  entries: number;
  /** Bytes per batch (a larger blob still goes, alone). */
  bytes: number;
}

/**
 * Two in flight, the second from 8 blobs: the worker (CPU-bound locally, ~8 ms a request) works on
 * one batch while the next gathers. With 16 Writes of 1 KiB in flight that makes batches of 8,
 * measured at 2.6x the rate of one request per Write; 3 or 4 smaller batches in flight were
 * slower. 1 MiB is a quarter of the worker's default
 * max_batch_total_size_bytes (4 MiB less 64 KiB, what REAPI clients assume), 16 of the largest
 * blobs batched (64 KiB). 16 blobs: the worker makes a subrequest per blob and per index shard it
 * touches, and Workers Free allows 50 a request.
 */
export const DEFAULT_LIMITS: BatchLimits = { inFlight: 2, fill: 8, entries: 16, bytes: 1024 * 1024 };

/** Without any deadline from its Writes, a batch still gives up at last, so a hung worker cannot hold a lane for ever. */
const LONGEST_BATCH_MS = 120_000;

interface Pending {
  blob: SmallBlob;
  /** When the Write's deadline passes (Date.now() scale); undefined: none. */
  deadline: number | undefined;
  settle(error: ConnectError | undefined): void;
}

interface Lane<L> {
  target: L;
  queue: Pending[];
  queuedBytes: number;
  inFlight: number;
}

export class SmallWriteBatcher<L> {
  private readonly lanes = new Map<string, Lane<L>>();

  constructor(
    private readonly send: SendBatch<L>,
    private readonly limits: BatchLimits = DEFAULT_LIMITS,
  ) {}

  /**
   * Stores `blob` in a batch of lane `key` (whose upstream call is made for `target`); resolves
   * when the worker has stored it, rejects with its own verdict or the batch's failure. Cancelled
   * through `signal` before its batch leaves, the blob is never sent; after, its batch goes on
   * without it being waited for.
   */
  write(key: string, target: L, blob: SmallBlob, signal: AbortSignal, timeoutMs: number | undefined): Promise<void> {
    if (signal.aborted) return Promise.reject(cancelled(signal));
    let lane = this.lanes.get(key);
    if (!lane) this.lanes.set(key, (lane = { target, queue: [], queuedBytes: 0, inFlight: 0 }));
    const l = lane;
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = {
        blob,
        deadline: timeoutMs === undefined ? undefined : Date.now() + timeoutMs,
        settle: (error) => {
          signal.removeEventListener("abort", onAbort);
          if (error) reject(error);
          else resolve();
        },
      };
      const onAbort = () => {
        const i = l.queue.indexOf(pending);
        if (i >= 0) {
          l.queue.splice(i, 1);
          l.queuedBytes -= blob.data.byteLength;
        }
        pending.settle(cancelled(signal));
        pending.settle = () => {}; // its batch's verdict, if it was sent, goes to nobody
        this.forget(key, l);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      l.queue.push(pending);
      l.queuedBytes += blob.data.byteLength;
      this.pump(key, l);
    });
  }

  private pump(key: string, lane: Lane<L>) {
    while (this.ready(lane)) {
      const batch = this.take(lane);
      lane.inFlight++;
      void this.sendBatch(lane, batch).finally(() => {
        lane.inFlight--;
        this.pump(key, lane);
        this.forget(key, lane);
      });
    }
  }

  private ready({ queue, queuedBytes, inFlight }: Lane<L>): boolean {
    if (queue.length === 0) return false;
    if (inFlight === 0 || queue.length >= this.limits.entries || queuedBytes >= this.limits.bytes) return true;
    return inFlight < this.limits.inFlight && queue.length >= this.limits.fill;
  }

  /** The head of the queue, as much as one batch may carry (always at least one blob). */
  private take(lane: Lane<L>): Pending[] {
    let bytes = lane.queue[0]!.blob.data.byteLength;
    let n = 1;
    while (n < lane.queue.length && n < this.limits.entries && bytes + lane.queue[n]!.blob.data.byteLength <= this.limits.bytes) {
      bytes += lane.queue[n]!.blob.data.byteLength;
      n++;
    }
    lane.queuedBytes -= bytes;
    return lane.queue.splice(0, n);
  }

  private async sendBatch(lane: Lane<L>, batch: Pending[]) {
    // As long as the most patient Write in it would wait.
    const deadlines = batch.map((p) => p.deadline);
    const timeoutMs = deadlines.includes(undefined) ? LONGEST_BATCH_MS : Math.max(1, Math.max(...(deadlines as number[])) - Date.now());
    try {
      const verdicts = await this.send(
        lane.target,
        batch.map((p) => p.blob),
        timeoutMs,
      );
      batch.forEach((p, i) => p.settle(verdicts[i]));
    } catch (e) {
      const failure = ConnectError.from(e);
      for (const p of batch) p.settle(failure);
    }
  }

  private forget(key: string, lane: Lane<L>) {
    if (lane.inFlight === 0 && lane.queue.length === 0 && this.lanes.get(key) === lane) this.lanes.delete(key);
  }
}

const cancelled = (signal: AbortSignal) => ConnectError.from(signal.reason ?? "the client cancelled", Code.Canceled);
