// Interleaved rounds: each subject runs one pass per round, in an order that rotates from round to
// round, so a subject and the limit it is compared with meet the same machine. This machine's speed
// drifts by more than the goals' margins within a run (two cores shared with workerd and the
// bridge); series run one after another minutes apart compared one drift with another. A pass
// divided by the same round's pass of the limit is a paired ratio, and the median of those is
// what the bench reports, next to the ratio of the best passes.

export interface Subject {
  name: string;
  /** One pass; `round` counts from 0 (a caller may give its own meaning to others, such as an untimed check). */
  pass(round: number): Promise<unknown>;
}

/** Runs `rounds` rounds of every subject; `run` times one pass. Returns each subject's passes in round order. */
export async function interleave<T>(subjects: Subject[], rounds: number, run: (s: Subject, round: number) => Promise<T>): Promise<Map<string, T[]>> {
  const out = new Map<string, T[]>(subjects.map((s) => [s.name, []]));
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < subjects.length; k++) {
      const s = subjects[(r + k) % subjects.length]!;
      out.get(s.name)!.push(await run(s, r));
    }
  }
  return out;
}

/** The median of a list of numbers (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Round-by-round ratios of two subjects' rates (higher is better for both). */
export function pairedRatios(values: number[], limits: number[]): number[] {
  if (values.length !== limits.length) throw new Error(`paired ratios of ${values.length} and ${limits.length} rounds`);
  return values.map((v, i) => v / limits[i]!);
}
