// Every HTTP surface answers an upload only after it has read the whole body: a client still
// sending when the answer comes (Bazel's HTTP cache client) sees a broken pipe and counts the
// upload as failed. Each body here is a stream that records whether it was read to its end
// before the response arrived.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { MAX_ACTION_RESULT_BYTES } from "../../src/storage/action-store.ts";
import { casHolds, pseudoRandom, sha256Hex } from "./helpers.ts";

interface TrackedBody {
  body: ReadableStream<Uint8Array>;
  /** Every byte was pulled by the server. */
  readonly finished: boolean;
  /** The server dropped the rest of the body. */
  readonly cancelled: boolean;
}

/** `data` as a stream of a known length (a Content-Length request), in 4 KiB pieces. */
function tracked(data: Uint8Array): TrackedBody {
  const state = { finished: false, cancelled: false };
  let sent = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(ctl) {
      const n = sent;
      if (n >= data.byteLength) {
        state.finished = true;
        ctl.close();
        return;
      }
      sent = Math.min(n + 4096, data.byteLength);
      ctl.enqueue(data.slice(n, sent));
    },
    cancel() {
      state.cancelled = true;
    },
  });
  const sized = new FixedLengthStream(data.byteLength);
  void source.pipeTo(sized.writable).catch(() => {});
  return {
    body: sized.readable,
    get finished() {
      return state.finished;
    },
    get cancelled() {
      return state.cancelled;
    },
  };
}

async function put(url: string, data: Uint8Array): Promise<{ res: Response; body: TrackedBody }> {
  const body = tracked(data);
  const res = await SELF.fetch(url, { method: "PUT", body: body.body, headers: { "content-length": String(data.byteLength) } });
  await res.arrayBuffer();
  return { res, body };
}

function expectReadToTheEnd(body: TrackedBody, what: string) {
  expect(body.cancelled, what).toBe(false);
  expect(body.finished, what).toBe(true);
}

describe("uploads are answered after their whole body", () => {
  const data = pseudoRandom(256 * 1024, 91);

  it("HTTP cache: a CAS PUT of a blob already stored", async () => {
    const hash = await sha256Hex(data);
    expect((await put(`http://kiln/cache/main/cas/${hash}`, data)).res.status).toBe(200);
    const again = await put(`http://kiln/cache/main/cas/${hash}`, data);
    expect(again.res.status).toBe(200);
    expectReadToTheEnd(again.body, "again");
  });

  it("blob HTTP: a PUT of a blob already stored, and one whose size disagrees", async () => {
    const hash = await sha256Hex(data);
    const url = (size: number) => `http://kiln/main/uploads/${crypto.randomUUID()}/blobs/${hash}/${size}`;
    expect((await put(url(data.byteLength), data)).res.status).toBe(200);
    const again = await put(url(data.byteLength), data);
    expect(again.res.status).toBe(200);
    expectReadToTheEnd(again.body, "again");
    // The blob exists, but these bytes are not it: refused, still after the whole body.
    const short = await put(url(data.byteLength), data.subarray(0, 1000));
    expect(short.res.status).toBe(400);
    expectReadToTheEnd(short.body, "short");
  });

  it("a body that does not hash to its digest is refused after it was read, and not stored", async () => {
    const wrong = await sha256Hex(pseudoRandom(1000, 92));
    const cache = await put(`http://kiln/cache/main/cas/${wrong}`, data);
    expect(cache.res.status).toBe(400);
    expectReadToTheEnd(cache.body, "cache");
    // More bytes than the resource name declares: the server stops using them at the limit.
    const blobs = await put(`http://kiln/main/uploads/${crypto.randomUUID()}/blobs/${wrong}/1000`, data);
    expect(blobs.res.status).toBe(400);
    expectReadToTheEnd(blobs.body, "blobs");
    expect(await casHolds(wrong)).toBe(false);
  });

  it("refusals before the body is looked at: a bad path, an oversized action result, REST", async () => {
    const badPath = await put(`http://kiln/cache/main/cas/not-a-hash`, data);
    expect(badPath.res.status).toBe(400);
    expectReadToTheEnd(badPath.body, "badPath");

    const bigAc = new Uint8Array(MAX_ACTION_RESULT_BYTES + 1);
    const ac = await put(`http://kiln/cache/main/ac/${await sha256Hex("k")}`, bigAc);
    expect(ac.res.status).toBe(400);
    expectReadToTheEnd(ac.body, "ac");

    // Over REST's JSON body limit (8 MiB), refused from its Content-Length.
    const json = new Uint8Array(9 * 1024 * 1024).fill(0x20);
    const rest = tracked(json);
    const res = await SELF.fetch("http://kiln/v2/main/blobs:findMissing", {
      method: "POST",
      body: rest.body,
      headers: { "content-length": String(json.byteLength), "content-type": "application/json" },
    });
    expect(res.status).toBe(400);
    expectReadToTheEnd(rest, "rest");
  });
});
