// The ResultStore search index in D1 is written through by each InvocationDO. A row that can never
// fit D1 (over its 2,000,000-byte row limit) is dead-lettered: logged, counted, removed from the
// queue, never retried; a failure that may pass is retried from the alarm, later each time.
import { SELF, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { invocationStub, newInvocation, upload } from "./resultstore-upload-helpers.ts";

const indexState = (invocationId: string) =>
  runInDurableObject(invocationStub(invocationId), (_o, state) => {
    const sql = state.storage.sql;
    return {
      pending: sql.exec<{ n: number }>(`SELECT count(*) AS n FROM index_pending`).one().n,
      deadLetters: sql.exec<{ name: string; bytes: number | null; reason: string }>(`SELECT name, bytes, reason FROM index_dead_letters`).toArray(),
      failures: Number(sql.exec<{ v: number }>(`SELECT v FROM meta WHERE k = 'index_failures'`).toArray()[0]?.v ?? 0),
    };
  });
const alarmOf = (invocationId: string) => runInDurableObject(invocationStub(invocationId), (_o, state) => state.storage.getAlarm());
const indexedRows = async (name: string) =>
  (await env.INDEX.prepare(`SELECT count(*) AS n FROM rs_invocations WHERE name = ?`).bind(name).first<{ n: number }>())!.n;

/** The retry backlog's two counters on /metrics (this isolate's, which the objects share in tests). */
async function backlogCounters() {
  const text = await (await SELF.fetch("http://kiln/metrics")).text();
  const value = (name: string) => Number(new RegExp(`^${name}\\{index="resultstore"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
  return { entered: value("kiln_index_retry_entered_total"), cleared: value("kiln_index_retry_cleared_total") };
}

/** ~1.2 MB of properties: the resource fits a Durable Object, its D1 row (resource + columns) does not. */
const bigProperties = () => Array.from({ length: 1200 }, (_, i) => ({ key: `k${i}`, value: "v".repeat(1000) }));

describe("search index: dead letters and backoff", () => {
  const triggers: string[] = [];
  afterEach(async () => {
    for (const t of triggers.splice(0)) await env.INDEX.prepare(`DROP TRIGGER IF EXISTS ${t}`).run();
  });

  /** D1 refuses this invocation's row with `message` (a trigger scoped to its id); returns the trigger's name. */
  async function refuseRowsOf(invocationId: string, message: string): Promise<string> {
    const trigger = `refuse_${invocationId.replace(/-/g, "")}`;
    triggers.push(trigger);
    await env.INDEX.prepare(
      `CREATE TRIGGER ${trigger} BEFORE INSERT ON rs_invocations WHEN NEW.invocation_id = '${invocationId}' BEGIN SELECT RAISE(ABORT, '${message}'); END`,
    ).run();
    return trigger;
  }

  it("a row over D1's row limit is dead-lettered: counted, not retried, and its older row removed", async () => {
    const inv = await newInvocation();
    expect(await indexedRows(inv.name)).toBe(1);
    await upload.updateInvocation({
      invocation: { name: inv.name, properties: bigProperties() },
      updateMask: { paths: ["properties"] },
      authorizationToken: inv.token,
    });
    const s = await indexState(inv.id);
    expect(s.pending).toBe(0);
    expect(s.failures).toBe(0);
    expect(s.deadLetters).toHaveLength(1);
    expect(s.deadLetters[0]!.name).toBe(inv.name);
    expect(s.deadLetters[0]!.bytes).toBeGreaterThan(2_000_000);
    // A search never answers with the version before it.
    expect(await indexedRows(inv.name)).toBe(0);
    // Nothing to retry: the alarm is the auto-finalize one (a day away), not the 10 s index retry.
    expect((await alarmOf(inv.id))! - Date.now()).toBeGreaterThan(3600_000);
  });

  it("a row D1 itself refuses as too big is dead-lettered the same way", async () => {
    const id = crypto.randomUUID();
    await refuseRowsOf(id, "string or blob too big");
    await upload.createInvocation({ invocationId: id, authorizationToken: crypto.randomUUID(), invocation: {} });
    const s = await indexState(id);
    expect(s.pending).toBe(0);
    expect(s.deadLetters.map((d) => d.reason)).toEqual([expect.stringContaining("too big")]);
  });

  it("a failure that may pass is retried from the alarm, backing off, until it succeeds", async () => {
    const id = crypto.randomUUID();
    const outage = await refuseRowsOf(id, "simulated D1 outage");
    const counted = await backlogCounters();
    const inv = await upload.createInvocation({ invocationId: id, authorizationToken: crypto.randomUUID(), invocation: {} });
    let s = await indexState(id);
    expect(s).toMatchObject({ pending: 1, failures: 1, deadLetters: [] });
    // The object joined the retry backlog once, however many times it fails in a row.
    const before = Date.now();
    expect(await runDurableObjectAlarm(invocationStub(id))).toBe(true);
    expect((await indexState(id)).failures).toBe(2);
    // The second retry waits twice as long as the first (10 s, then 20 s).
    expect((await alarmOf(id))!).toBeGreaterThanOrEqual(before + 20_000);
    expect(await backlogCounters()).toEqual({ entered: counted.entered + 1, cleared: counted.cleared });
    await env.INDEX.prepare(`DROP TRIGGER ${outage}`).run();
    expect(await runDurableObjectAlarm(invocationStub(id))).toBe(true);
    s = await indexState(id);
    expect(s).toMatchObject({ pending: 0, failures: 0, deadLetters: [] });
    expect(await indexedRows(inv.name)).toBe(1);
    expect(await backlogCounters()).toEqual({ entered: counted.entered + 1, cleared: counted.cleared + 1 });
  });
});
