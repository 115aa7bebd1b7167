// Upkeep that rides on a call (deleting a staging object or an expired entry, refreshing an ageing
// one, recording a split) never fails that call: a failure is one JSON line for Workers Logs, and
// the next call or the shard's alarm tries again.

/** Logs upkeep that failed: `{event, ...fields, error}`. */
export function upkeepFailed(event: string, fields: Record<string, unknown>, e: unknown): void {
  console.warn(JSON.stringify({ event, ...fields, error: String(e) }));
}

/** Runs upkeep: resolves when it is done or its failure is logged, never rejects. */
export const upkeep = (work: Promise<unknown>, event: string, fields: Record<string, unknown>): Promise<void> =>
  work.then(
    () => undefined,
    (e: unknown) => upkeepFailed(event, fields, e),
  );
