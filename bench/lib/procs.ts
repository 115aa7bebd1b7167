// Processes for the bench: the bare-R2 worker under `wrangler dev`, and CPU time
// of this process and of its descendants (workerd, wrangler) from /proc.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePorts } from "../../cli/ports.ts";

const repo = fileURLToPath(new URL("../../", import.meta.url));

const SETPRIV = "/usr/bin/setpriv";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface BareWorker {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Starts bench/bare-r2 with `wrangler dev` on a free port, persisting under `stateDir`. */
export async function startBareR2(stateDir: string): Promise<BareWorker> {
  const [port, inspector] = await freePorts(2);
  const log = path.join(stateDir, "wrangler.log");
  const out = fs.openSync(log, "a");
  // With util-linux's setpriv, wrangler gets SIGTERM if this process dies in any way (no orphans).
  const setpriv = fs.existsSync(SETPRIV) ? [SETPRIV, "--pdeathsig", "SIGTERM", "--"] : [];
  const argv = [...setpriv, path.join(repo, "node_modules/.bin/wrangler")];
  const child: ChildProcess = spawn(
    argv[0]!,
    [...argv.slice(1), "dev", "-c", path.join(repo, "bench/bare-r2/wrangler.toml"), "--ip", "127.0.0.1", "--port", String(port),
      "--inspector-port", String(inspector), "--persist-to", path.join(stateDir, "state"), "--log-level", "warn",
      "--show-interactive-dev-session=false"],
    {
      cwd: stateDir,
      detached: true, // own process group: stop() ends wrangler and its workerd children together
      stdio: ["ignore", out, out],
      env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false", CI: "true" },
    },
  );
  fs.closeSync(out);
  let exited = false;
  child.on("exit", () => (exited = true));
  const stop = async () => {
    if (exited || child.pid === undefined) return;
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {}
    for (let i = 0; i < 50 && !exited; i++) await sleep(100);
    if (!exited) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
    }
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (exited) throw new Error(`bare-r2 wrangler exited early:\n${fs.readFileSync(log, "utf8").slice(-3000)}`);
    try {
      const res = await fetch(`${url}/__ready`);
      await res.arrayBuffer();
      if (res.status === 404) break;
    } catch {}
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`bare-r2 did not start in 90 s:\n${fs.readFileSync(log, "utf8").slice(-3000)}`);
    }
    await sleep(200);
  }
  return { url, pid: child.pid!, stop };
}

// ---- CPU accounting ----

const TICK = 100; // USER_HZ on Linux

function statOf(pid: number): { ppid: number; ticks: number; comm: string } | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const close = s.lastIndexOf(")");
    const comm = s.slice(s.indexOf("(") + 1, close);
    const f = s.slice(close + 2).split(" ");
    // after "pid (comm) ": state ppid ... utime(14th field overall → f[11]) stime(f[12])
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), comm };
  } catch {
    return null;
  }
}

/** CPU seconds used so far by each descendant of this process, by pid. */
export function descendantsCpu(): Map<number, { comm: string; seconds: number }> {
  const all = new Map<number, { ppid: number; ticks: number; comm: string }>();
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const st = statOf(Number(e));
    if (st) all.set(Number(e), st);
  }
  const out = new Map<number, { comm: string; seconds: number }>();
  const isDesc = (pid: number): boolean => {
    for (let p = all.get(pid)?.ppid, hops = 0; p !== undefined && hops < 20; p = all.get(p)?.ppid, hops++) {
      if (p === process.pid) return true;
    }
    return false;
  };
  for (const [pid, st] of all) if (isDesc(pid)) out.set(pid, { comm: st.comm, seconds: st.ticks / TICK });
  return out;
}

export interface CpuSnap {
  self: number;
  children: Map<number, { comm: string; seconds: number }>;
}

export const cpuSnap = (): CpuSnap => {
  const u = process.cpuUsage();
  return { self: (u.user + u.system) / 1e6, children: descendantsCpu() };
};

/** CPU seconds between two snapshots: this process (client, bridge) and the workerd processes. */
export function cpuDelta(a: CpuSnap, b: CpuSnap): { self: number; workerd: number; other: number } {
  let workerd = 0;
  let other = 0;
  for (const [pid, v] of b.children) {
    const d = v.seconds - (a.children.get(pid)?.seconds ?? 0);
    if (/workerd/.test(v.comm)) workerd += d;
    else other += d;
  }
  return { self: b.self - a.self, workerd, other };
}
