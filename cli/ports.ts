// Port checks, so a second `kiln dev` fails clearly instead of talking to the first one, and free
// ports for the stacks the tests and the bench start.
import { createServer, type AddressInfo, type Server } from "node:net";
import { readProc } from "./proc.ts";

/** Throws if something already listens on host:port. */
export async function assertPortFree(port: number, what: string, host = "127.0.0.1"): Promise<void> {
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, resolve));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${what} port ${host}:${port} is not available (${code}); set another one`);
  } finally {
    server.close();
  }
}

/**
 * Ports free right now (held open together, so they differ), below the kernel's ephemeral range.
 * Ports the kernel hands out (listen(0), outgoing connections) come from that range, and wrangler
 * and workerd bind such ports for themselves while they start. A CI run's stack once found
 * something else answering its port (a plain 403 "Forbidden"); a port taken that way between
 * being freed here and wrangler binding it is the likeliest cause.
 */
export async function freePorts(n: number): Promise<number[]> {
  const ephemeralFrom = Number(/^(\d+)/.exec(readProc("/proc/sys/net/ipv4/ip_local_port_range") ?? "")?.[1] ?? 32768);
  const low = 10_000;
  const high = Math.max(low + 1000, Math.min(ephemeralFrom, 32768));
  const servers: Server[] = [];
  try {
    for (let tries = 0; servers.length < n; tries++) {
      if (tries > 200) throw new Error(`no ${n} free ports between ${low} and ${high}`);
      const port = low + Math.floor(Math.random() * (high - low));
      const s = createServer();
      const bound = await new Promise<boolean>((resolve) => s.once("error", () => resolve(false)).listen(port, "127.0.0.1", () => resolve(true)));
      if (bound) servers.push(s);
    }
    return servers.map((s) => (s.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}
