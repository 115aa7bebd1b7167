// Port checks, so a second `kiln dev` fails clearly instead of talking to the first one.
import { createServer } from "node:net";

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
