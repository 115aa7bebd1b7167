// Processes as Linux's /proc shows them.
import { readdirSync, readFileSync } from "node:fs";

/** Contents of a /proc file, or undefined if the process has gone meanwhile. */
export function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/**
 * Live processes of process group `pgid` (optionally only those named `comm`). Zombies don't
 * count: children orphaned by wrangler's exit wait as zombies until init reaps them, which in a
 * container can take a second or more.
 */
export function processesInGroup(pgid: number, comm?: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProc(`/proc/${entry}/stat`);
    if (!stat) continue;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z" && (comm === undefined || name === comm)) pids.push(Number(entry));
  }
  return pids;
}
