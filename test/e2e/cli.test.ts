// The `kiln` command as users run it: `npx kiln` from this checkout (package.json "bin"), help for
// every command, `kiln bridge --host 0.0.0.0` reached from another address of this machine, and
// the errors for a wrong upstream, a refused key and a port in use.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer, type AddressInfo } from "node:net";
import { networkInterfaces } from "node:os";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMMANDS } from "../../cli/commands.ts";
import { freePorts } from "../../cli/ports.ts";
import { auth, connect, unary } from "./grpc-client.ts";
import { startStack, type Stack } from "./stack.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const KEY = "cli-e2e-" + "k".repeat(40);
const COMMAND_NAMES = Object.keys(COMMANDS);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (`npx kiln …` or `node bin/kiln.mjs …`) in the checkout. */
async function run(argv: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const [code] = (await once(child, "exit")) as [number | null];
  return { code, stdout, stderr };
}
const kiln = (...args: string[]) => run([process.execPath, "bin/kiln.mjs", ...args]);

/** An IPv4 address of this machine other than loopback, if it has one. */
function otherAddress(): string | undefined {
  return Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === "IPv4" && !a.internal)?.address;
}

describe("kiln help", () => {
  it("npx kiln --help lists every command; each command has its own --help", async () => {
    const top = await run(["npx", "kiln", "--help"]);
    expect(top.code, top.stderr).toBe(0);
    for (const name of COMMAND_NAMES) expect(top.stdout).toMatch(new RegExp(`^  ${name} `, "m"));
    for (const name of COMMAND_NAMES) {
      const r = await kiln(name, "--help");
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^usage: kiln ${name}\\b`));
    }
  });

  it("a mistake on the command line: exit 2 with the command's usage", async () => {
    const r = await kiln("bridge", "--no-such-flag");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Unknown option '--no-such-flag'");
    expect(r.stderr).toContain("usage: kiln bridge");
    expect((await kiln("no-such-command")).code).toBe(2);
  });
});

describe("kiln bridge", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ vars: { API_KEYS: JSON.stringify([{ name: "cli", key: KEY }]) } });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it("npx kiln bridge --host 0.0.0.0 serves gRPC on the machine's other addresses", async () => {
    const bridge = spawn("npx", ["kiln", "bridge", "--host", "0.0.0.0", "--port", "0", "--upstream", stack.httpUrl], {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"],
      detached: true, // its own process group: npx and the node under it stop together
    });
    try {
      let out = "";
      const port = await new Promise<number>((resolve, reject) => {
        bridge.stdout.on("data", (d) => {
          out += d;
          const m = /grpc:\/\/0\.0\.0\.0:(\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        bridge.once("exit", (code) => reject(new Error(`kiln bridge exited (${code}): ${out}`)));
      });
      const address = otherAddress();
      if (!address) console.warn("[e2e] this machine has no non-loopback IPv4 address: reaching the bridge on 127.0.0.1");
      const c = connect(`${address ?? "127.0.0.1"}:${port}`);
      try {
        const caps = await unary(c.caps, "GetCapabilities", { instance_name: "cli" }, auth(KEY));
        expect(caps.cache_capabilities.digest_functions).toContain("SHA256");
      } finally {
        c.close();
      }
    } finally {
      process.kill(-bridge.pid!, "SIGTERM");
    }
  });

  it("a wrong upstream, a refused key and a port in use end it (and upload-bep) with the reason", async () => {
    const [closed] = await freePorts(1);
    const down = await kiln("bridge", "--port", "0", "--upstream", `http://127.0.0.1:${closed}`);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot reach the worker at http://127.0.0.1:${closed} (ECONNREFUSED)`);

    const notKiln = createServer((s) => s.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")).listen(0, "127.0.0.1");
    await once(notKiln, "listening");
    const other = await kiln("bridge", "--port", "0", "--upstream", `http://127.0.0.1:${(notKiln.address() as AddressInfo).port}`);
    notKiln.close();
    expect(other.code).toBe(1);
    expect(other.stderr).toContain("not a Kiln health report: is --upstream the Kiln worker?");

    const wrongKey = await run([process.execPath, "bin/kiln.mjs", "bridge", "--port", "0", "--upstream", stack.httpUrl], { KILN_API_KEY: "wrong-" + "x".repeat(40) });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain("refused KILN_API_KEY");

    const upload = await run([process.execPath, "bin/kiln.mjs", "upload-bep", "test/fixtures/bep/sample-test.bep", "--upstream", stack.httpUrl], { KILN_API_KEY: "wrong-" + "x".repeat(40) });
    expect(upload.code).toBe(1);
    expect(upload.stderr).toContain(`the worker at ${stack.httpUrl} refused the API key`);

    const taken = createServer().listen(0, "127.0.0.1");
    await once(taken, "listening");
    const port = (taken.address() as AddressInfo).port;
    const inUse = await run([process.execPath, "bin/kiln.mjs", "bridge", "--port", String(port), "--upstream", stack.httpUrl], { KILN_API_KEY: KEY });
    taken.close();
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toContain(`port ${port} on 127.0.0.1 is already in use (EADDRINUSE)`);
  });
});

