// The TCP sockets of a process, from /proc: its open socket inodes (/proc/PID/fd) matched against
// the rows of /proc/PID/net/tcp and tcp6. How tests prove the runner accepts no inbound connection
// (no row in state 0A, LISTEN) while it does hold its outbound ones.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

export interface TcpSocket {
  table: "tcp" | "tcp6";
  local: string;
  listening: boolean;
}

const read = (f: () => string) => {
  try {
    return f();
  } catch {
    return ""; // gone meanwhile
  }
};

export function tcpSockets(pid: number): TcpSocket[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    const m = /^socket:\[(\d+)\]$/.exec(read(() => readlinkSync(`/proc/${pid}/fd/${fd}`)));
    if (m) inodes.add(m[1]!);
  }
  const sockets: TcpSocket[] = [];
  for (const table of ["tcp", "tcp6"] as const) {
    for (const line of read(() => readFileSync(`/proc/${pid}/net/${table}`, "utf8")).split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const cols = line.trim().split(/\s+/);
      if (inodes.has(cols[9] ?? "")) sockets.push({ table, local: cols[1]!, listening: cols[3] === "0A" });
    }
  }
  return sockets;
}
