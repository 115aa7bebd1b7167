// Cost bench (`npm run bench:cost`): what a cached and an uncached Bazel action cost in billed
// operations, measured, not assumed. Against the real stack (wrangler dev + bridge + one local
// runner) it builds test/bazel four times from fresh output bases, reading /metrics before and
// after each build:
//   remote execution, cold (a fresh salt: every action runs on the runner) and warm (same salt:
//   every action a cache hit); remote cache only (--remote_cache over gRPC), cold (actions run
//   locally and upload) and warm.
// Per action it prints Worker requests, R2 Class A and B operations and Durable Object requests
// (WebSocket messages billed 20 to one request), and the dollars per million actions at list
// prices. BENCH_COST_SKIP_CACHE_ONLY=1 runs the remote-execution builds only.
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { WORKSPACE_DIR, bazelAvailable, disposeOutputBase, parseProcessSummary, runBazel } from "../test/e2e/bazel.ts";
import { startStack, type Stack } from "../test/e2e/stack.ts";
import { now, percentile } from "./lib/stats.ts";

/**
 * List prices, USD per million, beyond the included usage (Workers Paid plan), as published at
 * developers.cloudflare.com (r2/pricing, durable-objects/platform/pricing, workers/platform/pricing),
 * read 2026-11-29. Durable Object duration ($12.50 per million GB-s) and SQLite rows are not counted here.
 */
export const PRICES = { workerRequest: 0.3, r2ClassA: 4.5, r2ClassB: 0.36, doRequest: 0.15 };
/** Incoming WebSocket messages are billed as Durable Object requests at 20:1. */
const WS_MESSAGES_PER_REQUEST = 20;

const t0 = now();
const log = (s: string) => process.stderr.write(`[bench-cost ${((now() - t0) / 1000).toFixed(1).padStart(6)}s] ${s}\n`);

type Samples = Map<string, number>;

/** How long each /metrics scrape took, in ms. */
const scrapeMs: number[] = [];

async function scrape(stack: Stack): Promise<Samples> {
  const start = now();
  const res = await fetch(`${stack.httpUrl}/metrics`);
  if (!res.ok) throw new Error(`/metrics answered ${res.status}: ${await res.text()}`);
  const out: Samples = new Map();
  for (const line of (await res.text()).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  scrapeMs.push(now() - start);
  return out;
}

/** Sum of the change of `metric` over samples whose labels pass `keep`. */
function delta(before: Samples, after: Samples, metric: string, keep: (labels: string) => boolean = () => true): number {
  let n = 0;
  for (const [k, v] of after) {
    if (!k.startsWith(metric + "{")) continue;
    const labels = k.slice(metric.length + 1, -1);
    if (keep(labels) && !labels.includes('request="admin GET /metrics"') && !labels.includes('surface="admin"')) n += v - (before.get(k) ?? 0);
  }
  return n;
}

export interface BuildCost {
  name: string;
  actions: number;
  summary: string;
  seconds: number;
  workerRequests: number;
  r2A: number;
  r2B: number;
  doRequests: number;
  wsMessages: number;
  byRequest: Map<string, number>;
}

async function measuredBuild(stack: Stack, tmp: string, name: string, flags: string[], actionsOf: (s: ReturnType<typeof parseProcessSummary>) => number): Promise<BuildCost> {
  const outputBase = path.join(tmp, `ob-${randomUUID()}`);
  try {
    log(name);
    const before = await scrape(stack);
    const s = now();
    const run = await runBazel(WORKSPACE_DIR, ["test", "--remote_instance_name=bench/cost", ...flags, "//..."], { outputBase, timeoutMs: 15 * 60_000 });
    const seconds = (now() - s) / 1000;
    if (run.code !== 0) throw new Error(`bazel ${flags.join(" ")} failed (exit ${run.code}):\n${run.stderr.slice(-3000)}`);
    // Uploads and index writes may finish just after Bazel exits; the next scrape counts them.
    await new Promise((r) => setTimeout(r, 2000));
    const after = await scrape(stack);
    const sum = parseProcessSummary(run.stderr);
    const byRequest = new Map<string, number>();
    for (const [k, v] of after) {
      const m = /^kiln_(r2_operations|do_requests)_total\{.*request="([^"]*)"\}$/.exec(k);
      if (!m || m[2] === "admin GET /metrics") continue;
      const d = v - (before.get(k) ?? 0);
      if (d) byRequest.set(`${m[1]} ${m[2]}`, (byRequest.get(`${m[1]} ${m[2]}`) ?? 0) + d);
    }
    const ws = (l: string) => l.includes('method="webSocketMessage"');
    return {
      name,
      actions: actionsOf(sum),
      summary: Object.entries(sum.byKind).map(([k, v]) => `${v} ${k}`).join(", "),
      seconds,
      workerRequests: delta(before, after, "kiln_requests_total"),
      r2A: delta(before, after, "kiln_r2_operations_total", (l) => l.includes('class="A"')),
      r2B: delta(before, after, "kiln_r2_operations_total", (l) => l.includes('class="B"')),
      doRequests: delta(before, after, "kiln_do_requests_total", (l) => !ws(l)),
      wsMessages: delta(before, after, "kiln_do_requests_total", ws),
      byRequest,
    };
  } finally {
    await disposeOutputBase(WORKSPACE_DIR, outputBase);
  }
}

const per = (n: number, actions: number) => (actions ? n / actions : NaN);
const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

/** Dollars per million actions. */
export function dollarsPerMillion(c: BuildCost): number {
  const billedDo = c.doRequests + c.wsMessages / WS_MESSAGES_PER_REQUEST;
  return per(c.workerRequests * PRICES.workerRequest + c.r2A * PRICES.r2ClassA + c.r2B * PRICES.r2ClassB + billedDo * PRICES.doRequest, c.actions);
}

function report(costs: BuildCost[]): string {
  const head = ["build", "actions", "worker req/action", "R2 A/action", "R2 B/action", "DO req/action", "WS msg/action", "$ per million actions"];
  const rows = costs.map((c) => [
    c.name,
    String(c.actions),
    f(per(c.workerRequests, c.actions)),
    f(per(c.r2A, c.actions)),
    f(per(c.r2B, c.actions)),
    f(per(c.doRequests, c.actions)),
    f(per(c.wsMessages, c.actions)),
    f(dollarsPerMillion(c)),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((v, i) => (i ? v.padStart(w[i]!) : v.padEnd(w[i]!))).join(" | ");
  const out = [line(head), w.map((n) => "-".repeat(n)).join("-|-"), ...rows.map(line), ""];
  for (const c of costs) {
    out.push(`${c.name}: ${c.summary}; ${f(c.seconds, 1)} s; totals: ${c.workerRequests} worker requests, ${c.r2A} R2 A, ${c.r2B} R2 B, ${c.doRequests} DO requests, ${c.wsMessages} WebSocket messages`);
    const top = [...c.byRequest].sort((a, b) => b[1] - a[1]).slice(0, 8);
    out.push("  by request kind: " + top.map(([k, v]) => `${k}: ${v}`).join("; "));
  }
  out.push("", `/metrics scrape: p50 ${f(percentile(scrapeMs, 50), 1)} ms, max ${f(Math.max(...scrapeMs), 1)} ms over ${scrapeMs.length} scrapes`);
  out.push("", `Prices (USD per million): Workers requests ${PRICES.workerRequest}, R2 Class A ${PRICES.r2ClassA}, Class B ${PRICES.r2ClassB}, DO requests ${PRICES.doRequest} (list prices read 2026-11-29; duration and storage not included).`);
  return out.join("\n");
}

async function main() {
  if (!bazelAvailable()) throw new Error("bazel is not installed (apt-get install bazel-bootstrap)");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-cost-"));
  log("starting the Kiln stack with a local runner");
  const stack = await startStack({ runner: { sandbox: "none" } });
  const costs: BuildCost[] = [];
  try {
    const exec = [`--remote_executor=grpc://${stack.grpcTarget}`, "--spawn_strategy=remote"];
    const salt = randomUUID();
    const salted = [`--action_env=SALT=${salt}`, `--host_action_env=SALT=${salt}`];
    costs.push(await measuredBuild(stack, tmp, "remote execution, cold", [...exec, ...salted], (s) => s.executed));
    costs.push(await measuredBuild(stack, tmp, "remote execution, warm", [...exec, ...salted], (s) => s.remoteCacheHits));
    if (process.env.BENCH_COST_SKIP_CACHE_ONLY !== "1") {
      const cache = [`--remote_cache=grpc://${stack.grpcTarget}`];
      const salt2 = randomUUID();
      const salted2 = [`--action_env=SALT=${salt2}`, `--host_action_env=SALT=${salt2}`];
      costs.push(await measuredBuild(stack, tmp, "remote cache, cold", [...cache, ...salted2], (s) => s.executed));
      costs.push(await measuredBuild(stack, tmp, "remote cache, warm", [...cache, ...salted2], (s) => s.remoteCacheHits));
    }
  } finally {
    await stack.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(report(costs));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
