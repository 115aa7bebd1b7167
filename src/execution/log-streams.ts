// Live output of a running action, readable with ByteStream Read (the LogStream API's reading
// model): `{instance_name}/operations/{uuid}/attempts/{n}/stdout` (or stderr). The stream grows
// while the attempt runs and ends when it ends. Names are per attempt: a re-queued action starts
// new streams, and a reader of the old one sees that attempt's output and its end.
export type LogKind = "stdout" | "stderr";

export interface LogStreamRef {
  instanceName: string;
  operation: string;
  attempt: number;
  kind: LogKind;
}

export const logStreamName = (instanceName: string, operation: string, attempt: number, kind: LogKind) =>
  `${instanceName ? instanceName + "/" : ""}${operation}/attempts/${attempt}/${kind}`;

const LOG_STREAM = /^(?:(.+)\/)?(operations\/[0-9a-f-]{36})\/attempts\/([1-9][0-9]{0,3})\/(stdout|stderr)$/;

/** A log stream's parts, or null when the name is not a log stream (e.g. a blob). */
export function parseLogStreamName(name: string): LogStreamRef | null {
  const m = LOG_STREAM.exec(name);
  if (!m) return null;
  return { instanceName: m[1] ?? "", operation: m[2]!, attempt: Number(m[3]), kind: m[4] as LogKind };
}

/** Bytes of each stream an operation keeps for live readers; the whole output is in the CAS. */
export const LIVE_LOG_MAX_BYTES = 16 * 1024 * 1024;
