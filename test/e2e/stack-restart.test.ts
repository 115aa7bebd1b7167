// The whole worker restarted in the middle of a remote build: Bazel 4.2.3 (remote execution
// through the bridge) and a runner process that connects out both ride it out, and the build
// finishes correctly from the persisted state (operations, pool queue and leases, CAS, action
// cache). Bazel retries a call that fails while the worker is down with backoff; the default of
// 5 retries (about 3 s) is shorter than a restart here, so the build sets --remote_retries=30.
import { randomUUID } from "node:crypto";
import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bazelAvailable, disposeOutputBase, parseProcessSummary, runBazel } from "./bazel.ts";
import { requireTool, startStack, type Stack } from "./stack.ts";

const haveBazel = requireTool("bazel", bazelAvailable);
const ACTIONS = 8;

/** A workspace of ACTIONS genrules that each take ~4 s, so a restart lands in the middle. */
async function slowWorkspace(dir: string, salt: string) {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "WORKSPACE"), "");
  const rules = Array.from(
    { length: ACTIONS },
    (_, i) => `genrule(name = "slow${i}", outs = ["slow${i}.txt"], cmd = "sleep 4; echo 'slow ${i} ${salt}' > $@")`,
  );
  await writeFile(join(dir, "BUILD"), rules.join("\n") + "\n");
}

describe.skipIf(!haveBazel)("a worker restart in the middle of a remote build", () => {
  let dir = "";
  let stack: Stack;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kiln-restart-"));
    stack = await startStack({ persistDir: join(dir, "state") });
    await stack.spawnRunner({ slots: 4 });
  });
  afterAll(async () => {
    await stack?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("Bazel finishes the build with every output right, and a second build is all cache hits", async () => {
    const salt = randomUUID();
    const ws = join(dir, "ws");
    await slowWorkspace(ws, salt);
    const flags = [
      `--remote_executor=grpc://${stack.grpcTarget}`,
      "--remote_instance_name=e2e/restart",
      "--spawn_strategy=remote",
      "--remote_retries=30",
      "--remote_timeout=120",
    ];
    const outputBase = join(dir, "ob1");
    const build = runBazel(ws, ["build", ...flags, "//..."], { outputBase, timeoutMs: 8 * 60_000 });
    // Restart once the runner is busy with the build's first actions.
    await new Promise((r) => setTimeout(r, 6_000));
    const t0 = Date.now();
    await stack.restartWorker();
    console.log(`[stack-restart] worker down and up again in ${Date.now() - t0} ms`);
    const result = await build;
    expect(result.code, result.stderr).toBe(0);
    for (let i = 0; i < ACTIONS; i++) {
      expect((await readFile(join(ws, "bazel-bin", `slow${i}.txt`), "utf8")).trim()).toBe(`slow ${i} ${salt}`);
    }
    const cold = parseProcessSummary(result.stderr);
    expect(cold.byKind["remote"], result.stderr).toBe(ACTIONS);
    await disposeOutputBase(ws, outputBase);

    const warm = await runBazel(ws, ["build", ...flags, "//..."], { outputBase: join(dir, "ob2"), timeoutMs: 4 * 60_000 });
    expect(warm.code, warm.stderr).toBe(0);
    expect(parseProcessSummary(warm.stderr).remoteCacheHits, warm.stderr).toBe(ACTIONS);
    await disposeOutputBase(ws, join(dir, "ob2"));
  }, 12 * 60_000);
});
