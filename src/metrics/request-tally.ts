// Counts made while a request is served, attributed to that request. The access log runs each
// request inside withTally (an AsyncLocalStorage scope, so storage code needs no parameter for
// it); when the request is answered, settle() folds its counts into the isolate's counters with
// the request kind ("connect ContentAddressableStorage.FindMissingBlobs") as the `request` label of
// billed operations, and the same counts go to Analytics Engine as one data point. Counts made
// outside any request (Durable Object alarms, WebSocket messages, calls between objects) are
// counted at once as request="internal".
import { AsyncLocalStorage } from "node:async_hooks";
import { count, labelText, type CounterName, type Labels } from "./counters.ts";
import { writeInternalPoint } from "./analytics.ts";

export interface TallyEntry {
  name: CounterName;
  labels: Labels;
  n: number;
}

export class Tally {
  readonly entries = new Map<string, TallyEntry>();
  /** The request kind, once answered: counts arriving later (a body still streaming) go straight through. */
  request?: string;

  /** The sum of one counter's entries whose labels include `match`. */
  sum(name: CounterName, match: Labels = {}): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.name === name && Object.entries(match).every(([k, v]) => e.labels[k] === v)) n += e.n;
    return n;
  }
}

const current = new AsyncLocalStorage<Tally>();
/** Billed operations carry the request kind that caused them. */
const ATTRIBUTED = new Set<CounterName>(["kiln_r2_operations_total", "kiln_do_requests_total"]);

const commit = (name: CounterName, labels: Labels, n: number, request: string) =>
  count(name, ATTRIBUTED.has(name) ? { ...labels, request } : labels, n);

/** Counts `n` of a counter for the request being served (or as internal work outside one). */
export function tally(name: CounterName, labels: Labels, n = 1): void {
  const t = current.getStore();
  if (t && t.request === undefined) {
    const key = name + "{" + labelText(labels) + "}";
    const e = t.entries.get(key);
    if (e) e.n += n;
    else t.entries.set(key, { name, labels, n });
    return;
  }
  const request = t?.request ?? "internal";
  commit(name, labels, n, request);
  writeInternalPoint(name, labels, n, request);
}

/** Runs `fn` with `t` as the request's tally. */
export const withTally = <T>(t: Tally, fn: () => T): T => current.run(t, fn);

/** The request is answered: its counts join the isolate's counters under its kind. */
export function settle(t: Tally, request: string): void {
  t.request = request;
  for (const e of t.entries.values()) commit(e.name, e.labels, e.n, request);
}
