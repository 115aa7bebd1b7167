// The group commit of small Writes against a fake upstream whose batches return when the test says:
// who goes at once, who waits and with whom, limits, lanes, verdicts and cancellation.
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { SmallWriteBatcher, type SmallBlob } from "./small-write-batcher.ts";

interface Call {
  lane: string;
  hashes: string[];
  timeoutMs: number | undefined;
  answer(verdicts?: (ConnectError | undefined)[]): void;
  fail(e: unknown): void;
}

/** A batcher whose upstream calls are recorded and settled by hand. */
function fake(limits = { inFlight: 2, fill: 1, entries: 100, bytes: 1000 }) {
  const calls: Call[] = [];
  const batcher = new SmallWriteBatcher<string>(
    (lane, blobs, timeoutMs) =>
      new Promise((resolve, reject) => {
        calls.push({ lane, hashes: blobs.map((b) => b.hash), timeoutMs, answer: (v) => resolve(v ?? blobs.map(() => undefined)), fail: reject });
      }),
    limits,
  );
  const write = (lane: string, hash: string, { size = 10, signal = new AbortController().signal, timeoutMs = undefined as number | undefined } = {}) => {
    const p = batcher.write(lane, lane, blob(hash, size), signal, timeoutMs);
    const outcome = p.then(
      () => "OK",
      (e: ConnectError) => Code[e.code],
    );
    return { p, outcome };
  };
  return { calls, write };
}

const blob = (hash: string, size: number): SmallBlob => ({ hash, size, data: new Uint8Array(size) });
const tick = () => new Promise((r) => setImmediate(r));

describe("SmallWriteBatcher", () => {
  it("a lone Write goes at once; while two batches are out the rest queue and leave together", async () => {
    const { calls, write } = fake();
    const a = write("k", "a");
    expect(calls.map((c) => c.hashes)).toEqual([["a"]]);
    const b = write("k", "b");
    const rest = ["c", "d", "e"].map((h) => write("k", h));
    expect(calls.map((c) => c.hashes)).toEqual([["a"], ["b"]]);
    calls[0]!.answer();
    expect(await a.outcome).toBe("OK");
    await tick();
    expect(calls.map((c) => c.hashes)).toEqual([["a"], ["b"], ["c", "d", "e"]]);
    calls[1]!.answer();
    calls[2]!.answer();
    expect(await b.outcome).toBe("OK");
    expect(await Promise.all(rest.map((w) => w.outcome))).toEqual(["OK", "OK", "OK"]);
  });

  it("a further batch leaves while one is on its way only once `fill` blobs have gathered", async () => {
    const { calls, write } = fake({ inFlight: 2, fill: 3, entries: 100, bytes: 1000 });
    write("k", "a");
    write("k", "b");
    write("k", "c");
    expect(calls.map((c) => c.hashes)).toEqual([["a"]]);
    write("k", "d");
    expect(calls.map((c) => c.hashes)).toEqual([["a"], ["b", "c", "d"]]);
    // With nothing on its way, what has gathered goes, however little.
    write("k", "e");
    calls[0]!.answer();
    await tick();
    expect(calls.map((c) => c.hashes)).toEqual([["a"], ["b", "c", "d"]]);
    calls[1]!.answer();
    await tick();
    expect(calls.map((c) => c.hashes)).toEqual([["a"], ["b", "c", "d"], ["e"]]);
  });

  it("a batch holds at most `entries` blobs and `bytes` bytes, and leaves once full (a blob over the bytes goes alone)", async () => {
    const { calls, write } = fake({ inFlight: 1, fill: 1, entries: 3, bytes: 100 });
    const hashes = () => calls.map((c) => c.hashes);
    write("k", "first");
    write("k", "a");
    write("k", "b");
    expect(hashes()).toEqual([["first"]]);
    write("k", "c");
    expect(hashes()).toEqual([["first"], ["a", "b", "c"]]);
    write("k", "d");
    write("k", "big", { size: 150 });
    write("k", "e", { size: 60 });
    write("k", "f", { size: 60 });
    expect(hashes()).toEqual([["first"], ["a", "b", "c"], ["d"], ["big"], ["e"]]);
    for (const c of [...calls]) c.answer();
    await tick();
    expect(hashes()).toEqual([["first"], ["a", "b", "c"], ["d"], ["big"], ["e"], ["f"]]);
  });

  it("lanes never share a batch, and each has its own batches in flight", async () => {
    const { calls, write } = fake({ inFlight: 1, fill: 1, entries: 100, bytes: 1000 });
    write("k1", "a");
    write("k2", "b");
    write("k1", "c");
    write("k2", "d");
    write("k1", "e");
    expect(calls.map((c) => [c.lane, c.hashes])).toEqual([
      ["k1", ["a"]],
      ["k2", ["b"]],
    ]);
    calls[0]!.answer();
    calls[1]!.answer();
    await tick();
    expect(calls.slice(2).map((c) => [c.lane, c.hashes])).toEqual([
      ["k1", ["c", "e"]],
      ["k2", ["d"]],
    ]);
  });

  it("each Write gets its own blob's verdict; a failed call fails every Write in it", async () => {
    const { calls, write } = fake({ inFlight: 1, fill: 1, entries: 100, bytes: 1000 });
    write("k", "first");
    const [a, b, c] = ["a", "b", "c"].map((h) => write("k", h));
    calls[0]!.answer();
    await tick();
    calls[1]!.answer([undefined, new ConnectError("blob b: the data does not hash to b", Code.InvalidArgument), undefined]);
    expect([await a!.outcome, await b!.outcome, await c!.outcome]).toEqual(["OK", "InvalidArgument", "OK"]);
    await expect(b!.p).rejects.toThrow(/blob b/);

    write("k", "hold");
    const [d, e] = ["d", "e"].map((h) => write("k", h));
    calls[2]!.answer();
    await tick();
    expect(calls[3]!.hashes).toEqual(["d", "e"]);
    calls[3]!.fail(new ConnectError("worker gone", Code.Unavailable));
    expect([await d!.outcome, await e!.outcome]).toEqual(["Unavailable", "Unavailable"]);
    // The lane carries on.
    const f = write("k", "f");
    await tick();
    calls[4]!.answer();
    expect(await f.outcome).toBe("OK");
  });

  it("a Write cancelled while queued is never sent; one cancelled in flight leaves its batch to the others", async () => {
    const { calls, write } = fake({ inFlight: 1, fill: 1, entries: 100, bytes: 1000 });
    const first = new AbortController();
    const a = write("k", "a", { signal: first.signal });
    const queued = new AbortController();
    const b = write("k", "b", { signal: queued.signal });
    const c = write("k", "c");
    queued.abort();
    first.abort();
    expect([await a.outcome, await b.outcome]).toEqual(["Canceled", "Canceled"]);
    calls[0]!.answer();
    await tick();
    expect(calls.map((x) => x.hashes)).toEqual([["a"], ["c"]]);
    calls[1]!.answer();
    expect(await c.outcome).toBe("OK");
    const gone = new AbortController();
    gone.abort();
    expect(await write("k", "d", { signal: gone.signal }).outcome).toBe("Canceled");
    expect(calls).toHaveLength(2);
  });

  it("a batch waits as long as its most patient Write, and no Write waits for ever", async () => {
    const { calls, write } = fake({ inFlight: 1, fill: 1, entries: 100, bytes: 1000 });
    write("k", "first", { timeoutMs: 5000 });
    write("k", "a", { timeoutMs: 1000 });
    write("k", "b", { timeoutMs: 30_000 });
    calls[0]!.answer();
    await tick();
    write("k", "c");
    calls[1]!.answer();
    await tick();
    expect(calls[0]!.timeoutMs).toBeLessThanOrEqual(5000);
    expect(calls[1]!.timeoutMs).toBeGreaterThan(5000);
    expect(calls[1]!.timeoutMs).toBeLessThanOrEqual(30_000);
    expect(calls[2]!.timeoutMs).toBeGreaterThan(30_000);
  });
});
