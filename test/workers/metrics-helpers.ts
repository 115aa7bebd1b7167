// Reading /metrics in tests: every sample as "name{labels}" -> value, and the change between two scrapes.
import { SELF } from "cloudflare:test";
import { expect } from "vitest";

export async function scrape(headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const res = await SELF.fetch("http://kiln/metrics", { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** Samples of the given metrics that changed between two scrapes, and by how much. */
export function changed(before: Map<string, number>, after: Map<string, number>, metrics: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    if (!metrics.some((m) => k.startsWith(m + "{"))) continue;
    const d = v - (before.get(k) ?? 0);
    if (d) out[k] = d;
  }
  return out;
}
