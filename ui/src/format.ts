// Display helpers for protobuf timestamps, durations and sizes.
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";

export const millis = (t?: Timestamp): number | undefined => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : undefined);
export const durationMs = (d?: Duration): number | undefined => (d ? Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6) : undefined);

export function when(t?: Timestamp): string {
  const ms = millis(t);
  return ms === undefined ? "—" : new Date(ms).toLocaleString();
}

export function ms(n?: number): string {
  if (n === undefined) return "—";
  if (n < 1000) return `${n} ms`;
  if (n < 60_000) return `${(n / 1000).toFixed(n < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(n / 60_000);
  return `${m} min ${Math.round((n % 60_000) / 1000)} s`;
}

export function bytes(n: number | bigint): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}
