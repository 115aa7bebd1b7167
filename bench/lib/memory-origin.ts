// A plain HTTP origin, in a process of its own, that answers every GET with the same `size` bytes
// from memory. Put in front of the bridge instead of the worker, it measures what the bridge hop
// and the client cost on this machine with no worker and no R2 behind them.
import { spawn } from "node:child_process";

const SERVER = `
import http from "node:http";
const size = Number(process.argv[1]);
const bytes = Buffer.alloc(Math.min(size, 1 << 20), 7);
http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { "content-length": size });
  let sent = 0;
  const more = () => {
    while (sent < size) {
      const n = Math.min(bytes.byteLength, size - sent);
      sent += n;
      if (!res.write(n === bytes.byteLength ? bytes : bytes.subarray(0, n))) return void res.once("drain", more);
    }
    res.end();
  };
  more();
}).listen(0, "127.0.0.1", function () { console.log(this.address().port); });
`;

export async function startMemoryOrigin(size: number): Promise<{ url: string; stop(): void }> {
  const child = spawn(process.execPath, ["--input-type=module", "-e", SERVER, String(size)], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`the memory origin exited (${code})`)));
    child.stdout!.once("data", (d: Buffer) => resolve(Number(String(d).trim())));
  });
  const stop = () => void child.kill();
  process.once("exit", stop);
  return { url: `http://127.0.0.1:${port}`, stop };
}
