// What a first deploy relies on: the D1 schema comes from migrations/ (as `wrangler d1 migrations
// apply` leaves it), and without PUBLIC_URL runner containers dial the origin Execute calls came to.
import { SELF, env } from "cloudflare:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { afterEach, describe, expect, it } from "vitest";
import { Execution } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { poolStub, shardOf } from "../../src/execution/pool.ts";
import { newAction, request } from "./execution-helpers.ts";

describe("D1 schema", () => {
  it("is migrations/, applied and recorded as wrangler records it", async () => {
    const applied = await env.INDEX.prepare(`SELECT name FROM d1_migrations ORDER BY id`).all<{ name: string }>();
    expect(applied.results.map((r) => r.name)).toEqual(env.TEST_MIGRATIONS.map((m) => m.name));
    const tables = await env.INDEX.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all<{ name: string }>();
    expect(tables.results.map((r) => r.name)).toEqual(expect.arrayContaining(["operations", "rs_invocations", "rs_targets", "rs_configurations", "rs_configured_targets"]));
  });
});

describe("PUBLIC_URL", () => {
  const saved = env.PUBLIC_URL;
  afterEach(() => {
    env.PUBLIC_URL = saved;
  });

  /** Queues an action through an Execute call made to `origin`; returns the pool shard it went to. */
  async function executeAt(origin: string): Promise<number> {
    const transport = createConnectTransport({
      baseUrl: origin,
      useBinaryFormat: true,
      fetch: ((input: RequestInfo | URL, init?: RequestInit) =>
        SELF.fetch(input as string, { ...init, redirect: "manual", headers: { ...Object.fromEntries(new Headers(init?.headers)), "x-forwarded-host": "evil.example" } })) as typeof fetch,
    });
    const a = await newAction("wait");
    const stop = new AbortController();
    // The first message is the queued operation: the pool has the entry by then.
    for await (const _ of createClient(Execution, transport).execute(request(a), { signal: stop.signal })) break;
    stop.abort();
    return shardOf("default", a.hash);
  }

  it("unset: containers dial the origin the Execute call arrived at (its URL; forwarding headers are ignored)", async () => {
    delete env.PUBLIC_URL;
    const shard = await executeAt("https://kiln.example.com");
    expect(await poolStub(env, shard).containerUrl()).toBe("https://kiln.example.com");
    // The latest call's origin wins (a worker reached under a new domain).
    await executeAt("http://kiln.internal:8787");
    expect(await poolStub(env, shard).containerUrl()).toBe("http://kiln.internal:8787");
  });

  it("set: it wins over the request origin", async () => {
    env.PUBLIC_URL = "https://runners.example.net/";
    const shard = await executeAt("https://kiln.example.com");
    expect(await poolStub(env, shard).containerUrl()).toBe("https://runners.example.net");
  });
});
