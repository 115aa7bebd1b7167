// Live stdout/stderr of a running action, appended to the worker (RunnerService.AppendLog) while
// it runs. The command writes straight into its files; this tails each file, sending what is new
// every FLUSH_MS or as soon as CHUNK bytes are there. Memory stays bounded whatever the action
// prints or however slow the worker is: at most one CHUNK per stream is in memory, the rest waits
// in the file. A transient failure is retried from the same offset (the worker applies a repeated
// offset once; it answers the size it holds, and after a gap the runner resends from there). The
// complete stdout and stderr always go to the CAS as well; the live stream is a view of them, and
// says so in the stream itself if it stops early.
import fs from "node:fs/promises";
import { LogStream } from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { isTransient, type RunnerServiceClient } from "./runner-service.ts";

export const FLUSH_MS = 200;
export const CHUNK = 64 * 1024;
/** Once the action has ended, at most this much unsent output is still streamed before finishing. */
export const TAIL_AFTER_END = 8 * 1024 * 1024;

export interface LiveLogTarget {
  client: RunnerServiceClient;
  leaseId: string;
  token: string;
  log?: (line: string) => void;
}

class StreamTail {
  private offset = 0;
  private stopped = false;

  constructor(
    private readonly target: LiveLogTarget,
    private readonly stream: LogStream,
    private readonly file: string,
  ) {}

  /** Sends what the file holds beyond the offset, up to `limit` bytes; false if it had to stop. */
  async pump(limit = Infinity): Promise<boolean> {
    if (this.stopped) return false;
    const handle = await fs.open(this.file, "r").catch(() => null);
    if (!handle) return true; // not created yet
    try {
      const buf = Buffer.alloc(CHUNK);
      let sent = 0;
      while (sent < limit) {
        const { bytesRead } = await handle.read(buf, 0, Math.min(CHUNK, limit - sent), this.offset);
        if (bytesRead === 0) return true;
        if (!(await this.send(buf.subarray(0, bytesRead), false))) return false;
        sent += bytesRead;
      }
      return true;
    } finally {
      await handle.close();
    }
  }

  /** The last bytes and the end of the stream (with a note when the tail was not sent). */
  async end(): Promise<void> {
    if (this.stopped) return;
    if (!(await this.pump(TAIL_AFTER_END))) return;
    const size = (await fs.stat(this.file).catch(() => null))?.size ?? this.offset;
    const note =
      size > this.offset
        ? Buffer.from(`\n[kiln: live output stops here, ${size - this.offset} bytes before the end; the complete output is in the action result]\n`)
        : Buffer.alloc(0);
    await this.send(note, true);
  }

  private async send(data: Buffer, finished: boolean): Promise<boolean> {
    const t = this.target;
    for (let attempt = 1; ; attempt++) {
      try {
        const held = Number(await t.client.appendLog(t.token, { leaseId: t.leaseId, stream: this.stream, offset: BigInt(this.offset), data, finished }));
        if (finished) return true;
        if (held === this.offset && data.byteLength > 0) {
          // Nothing more is kept (the worker's live-log bound): the rest is in the result only.
          this.stopped = true;
          t.log?.(`lease ${t.leaseId}: live ${LogStream[this.stream].toLowerCase()} is full at ${held} bytes`);
          return false;
        }
        // Normally offset + length; less after a gap (the worker lost some): resend from there,
        // the bytes are still in the file.
        this.offset = Math.min(held, this.offset + data.byteLength);
        return true;
      } catch (e) {
        if (isTransient(e) && attempt < 4) {
          await new Promise((r) => setTimeout(r, FLUSH_MS * attempt));
          continue;
        }
        // The live view is best effort; the result does not depend on it.
        this.stopped = true;
        t.log?.(`lease ${t.leaseId}: live ${LogStream[this.stream].toLowerCase()} stopped: ${(e as Error).message}`);
        return false;
      }
    }
  }
}

/** Streams both files until `finish()`, which sends the tails and marks both streams finished. */
export function startLiveLog(target: LiveLogTarget, stdoutPath: string, stderrPath: string): { finish(): Promise<void> } {
  const tails = [new StreamTail(target, LogStream.STDOUT, stdoutPath), new StreamTail(target, LogStream.STDERR, stderrPath)];
  let ending = false;
  let wake: (() => void) | undefined;
  // One pass at a time: a slow worker slows the passes down instead of piling them up.
  const loop = (async () => {
    for (;;) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, FLUSH_MS);
      });
      if (ending) break;
      await Promise.all(tails.map((t) => t.pump(CHUNK * 16)));
    }
  })();
  return {
    async finish() {
      ending = true;
      wake?.(); // the action ended: no need to wait for the next tick
      await loop;
      await Promise.all(tails.map((t) => t.end()));
    },
  };
}
