// Small helpers: timing, percentiles, a bounded-concurrency pool and the result table.

export const now = () => performance.now();

/** Nearest-rank percentile (p in 0..100) of a list of numbers. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Runs fn over items with at most `limit` in flight. */
export async function pool<T>(items: T[], limit: number, fn: (t: T, i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export interface Row {
  metric: string;
  value: string;
  limit: string;
  ratio: string;
  cpu?: string;
}

export function table(rows: Row[]): string {
  const head: Row = { metric: "metric", value: "value", limit: "limit", ratio: "ratio", cpu: "cpu s/pass node|workerd" };
  const cols: (keyof Row)[] = ["metric", "value", "limit", "ratio", "cpu"];
  const all = [head, ...rows];
  const w = cols.map((c) => Math.max(...all.map((r) => (r[c] ?? "").length)));
  const line = (r: Row) => cols.map((c, i) => (c === "value" || c === "ratio" ? (r[c] ?? "").padStart(w[i]!) : (r[c] ?? "").padEnd(w[i]!))).join(" | ").trimEnd();
  const sep = w.map((n) => "-".repeat(n)).join("-|-");
  return [line(head), sep, ...rows.map(line)].join("\n");
}

export const fmt = (n: number, digits = 1) =>
  n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(Math.min(digits, 1)) : n.toFixed(Math.max(digits, 2));
