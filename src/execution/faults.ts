// Fault points for tests: a test arms a point, the next call that passes it throws, as a network
// or Durable Object failure would. Unarmed, a point is one Map lookup. Nothing in production arms
// one; the workerd tests do, through this module (they share the isolate with the objects).
const armed = new Map<string, number>();

export type FaultPoint =
  | "pool.enqueue"
  | "pool.complete"
  | "pool.deliver"
  | "operation.init"
  | "operation.event"
  | "operation.reconcile"
  | "invocation.remoteCall";

export function armFault(point: FaultPoint, times = 1): void {
  armed.set(point, (armed.get(point) ?? 0) + times);
}

export function clearFaults(): void {
  armed.clear();
}

export function faultPoint(point: FaultPoint): void {
  const n = armed.get(point);
  if (!n) return;
  if (n <= 1) armed.delete(point);
  else armed.set(point, n - 1);
  throw new Error(`injected fault at ${point}`);
}
