// Bazel 4.2.3 against Kiln as a remote executor (gRPC through the bridge, a real runner): every
// action of test/bazel runs remotely and gives byte for byte what a local build gives; a second
// build from a fresh output base is all remote cache hits; a failing remote test fails the build
// with its log shown. Each build runs in a fresh output base, so nothing is reused locally.
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  WORKSPACE_DIR,
  bazelAvailable,
  disposeOutputBase,
  outputDigests,
  parseProcessSummary,
  runBazel,
  type ProcessSummary,
} from "./bazel.ts";
import { requireTool, startStack, type Stack } from "./stack.ts";

const haveBazel = requireTool("bazel", bazelAvailable);

/** A second workspace, outside test/bazel's `//...`: one sh_test that always fails. */
const FAILING_WORKSPACE_DIR = new URL("../bazel-failing/", import.meta.url).pathname;

const INSTANCE = "e2e/remote-exec";
const BUILD_TIMEOUT = 8 * 60_000;

interface Build {
  code: number;
  stdout: string;
  stderr: string;
  summary: ProcessSummary;
  digests: Record<string, string>;
  wallMs: number;
}

/** Runs `bazel test <flags> //...` in a fresh output base (removed afterwards): what ran and what it produced. */
async function build(dir: string, workspace: string, flags: string[], targets = ["//..."]): Promise<Build> {
  const outputBase = join(dir, `ob-${randomUUID()}`);
  try {
    const t0 = performance.now();
    const run = await runBazel(workspace, ["test", ...flags, ...targets], { outputBase, timeoutMs: BUILD_TIMEOUT });
    const wallMs = Math.round(performance.now() - t0);
    const summary = parseProcessSummary(run.stderr);
    const digests = run.code === 0 ? await outputDigests(workspace, targets, { outputBase, flags }) : {};
    return { ...run, summary, digests, wallMs };
  } finally {
    await disposeOutputBase(workspace, outputBase);
  }
}

/** Flags that change every action key without changing any output, so a cold build misses. */
function salted(): string[] {
  const salt = randomUUID();
  return [`--action_env=SALT=${salt}`, `--host_action_env=SALT=${salt}`];
}

// Bazel reports remote trouble (fallbacks, failed uploads) as warnings; any means Kiln misbehaved.
const REMOTE_WARNING = /WARNING: .*(Remote|remote)/;

/** Bazel's last process summary line, for the log. */
const summaryLine = (b: Build) => [...b.stderr.matchAll(/^INFO: \d+ process.*$/gm)].at(-1)?.[0];

describe.skipIf(!haveBazel)("Bazel remote execution", () => {
  let dir = "";
  let stack: Stack;
  let remote: string[];
  const salt = salted();
  let cold: Build | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kiln-bazel-remote-"));
    stack = await startStack({ runner: true });
    remote = [`--remote_executor=grpc://${stack.grpcTarget}`, `--remote_instance_name=${INSTANCE}`, "--spawn_strategy=remote"];
  });
  afterAll(async () => {
    await stack?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(
    "runs every action of //... remotely, tests pass, and the outputs are byte-identical to a local build",
    async () => {
      const local = await build(dir, WORKSPACE_DIR, ["--spawn_strategy=local", ...salt]);
      expect(local.code, local.stderr).toBe(0);
      expect(local.summary.byKind["local"], local.stderr).toBeGreaterThan(20);
      expect(local.summary.remoteCacheHits).toBe(0);

      const invocationId = randomUUID();
      cold = await build(dir, WORKSPACE_DIR, [...remote, ...salt, `--invocation_id=${invocationId}`]);
      expect(cold.code, cold.stderr).toBe(0);
      // Each Execute carried the build's invocation id (RequestMetadata): the invocation lists them.
      const linked = async () => {
        const res = await fetch(`${stack.httpUrl}/v1/invocations/${invocationId}/remoteActions?pageSize=1000`);
        return ((await res.json()) as { totalExecutions?: string }).totalExecutions ?? "0";
      };
      await expect.poll(linked).toBe(String(cold.summary.executed));
      expect(cold.stderr).not.toMatch(REMOTE_WARNING);
      expect(cold.summary.remoteCacheHits, cold.stderr).toBe(0);
      // Every process that was not Bazel's internal bookkeeping ran on the runner.
      expect(cold.summary.byKind["remote"], cold.stderr).toBe(cold.summary.executed);
      expect(cold.summary.executed).toBe(local.summary.executed);
      // The test summary goes to stdout.
      expect(cold.stdout + cold.stderr).toMatch(/Executed 4 out of 4 tests: 4 tests pass/);
      // A cc_binary compiled and linked on the runner, run by a test marked size = "large".
      expect(cold.stdout + cold.stderr).toMatch(/\/\/cc:hello_test\s+PASSED/);
      expect(Object.keys(cold.digests).length).toBeGreaterThan(20);
      expect(cold.digests).toEqual(local.digests);
      console.log(
        `[bazel-remote] local build+test ${local.wallMs} ms (${summaryLine(local)}); ` +
          `remote cold ${cold.wallMs} ms (${summaryLine(cold)})`,
      );
    },
    BUILD_TIMEOUT * 2,
  );

  it(
    "a second remote build from a fresh output base is all remote cache hits",
    async () => {
      expect(cold, "needs the cold remote build of the previous test").toBeDefined();
      const warm = await build(dir, WORKSPACE_DIR, [...remote, ...salt]);
      expect(warm.code, warm.stderr).toBe(0);
      expect(warm.stderr).not.toMatch(REMOTE_WARNING);
      expect(warm.summary.executed, warm.stderr).toBe(0);
      expect(warm.summary.remoteCacheHits).toBe(cold!.summary.executed);
      // Cached test results count as passes (Bazel 4 prints "(cached) PASSED" for remote hits too).
      expect(warm.stderr + warm.stdout).toMatch(/4 tests pass/);
      expect(warm.digests).toEqual(cold!.digests);
      console.log(`[bazel-remote] remote warm ${warm.wallMs} ms (${summaryLine(warm)})`);
    },
    BUILD_TIMEOUT,
  );

  it(
    "a failing test run remotely fails the build (exit 3) and Bazel shows its log",
    async () => {
      const failed = await build(dir, FAILING_WORKSPACE_DIR, [...remote, "--test_output=errors", ...salted()], ["//:failing_test"]);
      const output = failed.stdout + failed.stderr;
      expect(failed.code, output).toBe(3);
      expect(failed.summary.byKind["remote"], failed.stderr).toBe(failed.summary.executed);
      expect(failed.summary.executed).toBeGreaterThanOrEqual(1);
      expect(output).toMatch(/\/\/:failing_test\s+FAILED/);
      // --test_output=errors prints the failed test's log, fetched from the CAS.
      expect(output).toContain("kiln-failing-test: this test fails on purpose");
      expect(output).toContain("kiln-failing-test: stderr line");
      expect(output).toMatch(/Executed 1 out of 1 test: 1 fails/);
    },
    BUILD_TIMEOUT,
  );
});
