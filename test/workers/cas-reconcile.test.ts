// Reconcile repairs the CAS index against R2 both ways (rows without objects go, objects without
// rows are added), in bounded steps resumed from a cursor, over 10,000 blobs.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { admin, missing, tenantPerTest } from "./cas-eviction-helpers.ts";
import { digestOf } from "./helpers.ts";

const setup = tenantPerTest();

const chunks = <T>(xs: T[], n: number) => Array.from({ length: Math.ceil(xs.length / n) }, (_, i) => xs.slice(i * n, i * n + n));

async function blob(tag: string, i: number) {
  const data = new TextEncoder().encode(`${tag}/${i}`);
  const d = await digestOf(data);
  return { data, digest: d, key: { hash: d.hash, size: data.byteLength } };
}

describe("reconcile", () => {
  it("repairs 10,000 blobs both ways, resumably, in steps of at most 1,000 objects", { timeout: 300_000 }, async () => {
    const t = setup();
    const [both, objectOnly, rowOnly] = await Promise.all(
      ([["both", 4000], ["object", 3000], ["row", 3000]] as const).map(([tag, n]) => Promise.all(Array.from({ length: n }, (_, i) => blob(`${t.tenant}/${tag}`, i)))),
    );
    for (const c of chunks([...both!, ...objectOnly!], 200)) {
      await Promise.all(c.map((b) => env.CAS.put(`cas/${t.tenant}/${b.digest.hash}`, b.data)));
    }
    for (const c of chunks([...both!, ...rowOnly!], 1000)) await t.index.add(c.map((b) => b.key));
    // The rows are older than the listing (a row written during a reconcile is left alone).
    for (const s of t.index.allShards()) {
      await runInDurableObject(s.stub, (_o, state) => void state.storage.sql.exec(`UPDATE blobs SET last_access = last_access - 7200000`));
    }
    expect((await admin(t, "GET", "/admin/cas/stats")).body.tenants[0]).toMatchObject({ blobs: 7000 });

    // Three steps, then "the operator's shell dies": a new loop resumes from the printed cursor.
    const totals = { added: 0, removed: 0, listed: 0, steps: 0 };
    let cursor = "";
    let done = false;
    const step = async () => {
      const r = await admin(t, "POST", `/admin/cas/reconcile?cursor=${cursor}`);
      expect(r.status).toBe(200);
      expect(r.body.listed).toBeLessThanOrEqual(1000);
      totals.added += r.body.added;
      totals.removed += r.body.removed;
      totals.listed += r.body.listed;
      totals.steps++;
      cursor = r.body.cursor;
      done = r.body.done;
    };
    for (let i = 0; i < 3; i++) await step();
    expect(done).toBe(false);
    expect(cursor).toMatch(/^[0-9a-f]{64}$/);
    while (!done) await step();
    expect(totals).toMatchObject({ added: 3000, removed: 3000, listed: 7000 });
    expect(totals.steps).toBeGreaterThanOrEqual(7);

    const stats = (await admin(t, "GET", "/admin/cas/stats")).body.tenants[0];
    expect(stats).toMatchObject({ blobs: 7000 });
    expect(stats.counters).toMatchObject({ reconcile_added: 3000, reconcile_removed: 3000 });
    const sample = (xs: { digest: { hash: string; sizeBytes: bigint }; data: Uint8Array }[]) => xs.filter((_, i) => i % 100 === 0);
    expect((await missing(t, sample(both!))).size).toBe(0);
    expect((await missing(t, sample(objectOnly!))).size).toBe(0);
    expect((await missing(t, sample(rowOnly!))).size).toBe(sample(rowOnly!).length);

    // A second pass finds nothing to repair.
    cursor = "";
    done = false;
    const before = { ...totals };
    while (!done) await step();
    expect(totals.added - before.added).toBe(0);
    expect(totals.removed - before.removed).toBe(0);
  });

  it("refuses a cursor it did not hand out and an unknown tenant; needs an admin key", async () => {
    const t = setup();
    expect((await admin(t, "POST", "/admin/cas/reconcile?cursor=zz")).status).toBe(400);
    expect((await admin(t, "POST", "/admin/cas/reconcile?cursor=%ZZ")).status).toBe(400);
    expect((await admin(t, "POST", "/admin/cas/evict?idle_seconds=-1")).status).toBe(400);
    const unknown = await admin(t, "POST", "/admin/cas/reconcile?tenant=nobody");
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toMatch(/tenant "nobody" is not configured/);
    const key = `plain-${crypto.randomUUID()}-${crypto.randomUUID()}`;
    env.API_KEYS = JSON.stringify([...JSON.parse(env.API_KEYS!), { key, tenant: t.tenant, name: "builder" }]);
    for (const [method, path] of [["GET", "/admin/cas/stats"], ["POST", "/admin/cas/reconcile"], ["POST", "/admin/cas/evict"]] as const) {
      expect((await admin({ ...t, headers: { authorization: `Bearer ${key}` } }, method, path)).status).toBe(403);
      expect((await admin({ ...t, headers: {} }, method, path)).status).toBe(401);
    }
  });
});
