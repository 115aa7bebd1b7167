// Bazel 4.2.3 over gRPC (the bridge) against a Kiln whose CAS is evicted or loses objects behind
// its back: the next build from a fresh output base must succeed (misses rebuilt, no exit 34/39),
// and blobs deleted from R2 directly are uploaded again by the next build.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WORKSPACE_DIR, bazelAvailable, disposeOutputBase, outputDigests, parseProcessSummary, runBazel } from "./bazel.ts";
import { requireTool, startStack, type Stack } from "./stack.ts";
import { SMALL_BLOB_MAX_BYTES } from "../../src/shared/small-blob-size.ts";

const haveBazel = requireTool("bazel", bazelAvailable);
const ROOT = new URL("../../", import.meta.url).pathname;
const BUILD_TIMEOUT = 8 * 60_000;

/** Runs a command from the checkout (the `kiln` CLI, wrangler); its exit code and output. */
function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b));
    child.stderr.on("data", (b: Buffer) => (out += b));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, out }));
  });
}

const kiln = (stack: Stack, ...args: string[]) => run(process.execPath, ["--import", "tsx", "cli/kiln.ts", ...args, "--upstream", stack.httpUrl]);

describe.skipIf(!haveBazel)("Bazel after eviction and behind-the-back deletes", () => {
  let stack: Stack;
  let dir = "";
  let persistDir = "";
  const salt = randomUUID();
  const grpc = () => [`--remote_cache=grpc://${stack.grpcTarget}`, `--action_env=SALT=${salt}`, `--host_action_env=SALT=${salt}`];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kiln-evict-bazel-"));
    persistDir = await mkdtemp(join(tmpdir(), "kiln-evict-state-"));
    // Nothing is evicted by the alarms (no budget, no idle lifetime); the test evicts by hand, with
    // no minimum lifetime so that blobs of the build just done can go.
    stack = await startStack({ persistDir, vars: { CAS_MIN_LIFETIME_HOURS: "0", CAS_TOUCH_INTERVAL_SECONDS: "0", CAS_EXISTENCE_CACHE_SECONDS: "0" } });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
    await rm(persistDir, { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function build(flags: string[], targets = ["//..."], digests = false) {
    const outputBase = join(dir, `ob-${randomUUID()}`);
    try {
      const r = await runBazel(WORKSPACE_DIR, ["build", ...flags, ...targets], { outputBase, timeoutMs: BUILD_TIMEOUT });
      const summary = r.code === 0 ? parseProcessSummary(r.stderr) : undefined;
      const outputs = digests && r.code === 0 ? await outputDigests(WORKSPACE_DIR, targets, { outputBase, flags }) : {};
      return { ...r, summary, outputs };
    } finally {
      await disposeOutputBase(WORKSPACE_DIR, outputBase);
    }
  }

  it(
    "--remote_download_minimal: after `kiln admin evict` frees every idle blob, a fresh build succeeds and rebuilds the misses",
    async () => {
      const minimal = [...grpc(), "--remote_download_minimal"];
      const cold = await build(minimal);
      expect(cold.code, cold.stderr).toBe(0);
      const before = await kiln(stack, "admin", "stats");
      expect(before.code, before.out).toBe(0);
      const blobsBefore = Number(/default: (\d+) blobs/.exec(before.out)?.[1]);
      expect(blobsBefore).toBeGreaterThan(20);

      const evicted = await kiln(stack, "admin", "evict", "--idle-seconds", "0");
      expect(evicted.code, evicted.out).toBe(0);
      expect(evicted.out).toMatch(new RegExp(`evicted ${blobsBefore} blobs`));
      const after = await kiln(stack, "admin", "stats");
      expect(after.out).toMatch(/default: 0 blobs/);
      expect(after.out).toMatch(new RegExp(`evicted ${blobsBefore} idle`));

      // The action cache still holds every entry, but each points at evicted blobs: a miss, not a hit.
      const again = await build(minimal);
      expect(again.code, again.stderr).toBe(0);
      // (An entry that references no blob but the empty one, which always exists, may still hit.)
      expect(again.summary!.executed, again.stderr).toBeGreaterThan(20);
      expect(again.summary!.remoteCacheHits).toBeLessThan(again.summary!.executed / 5);
      // And what it uploaded serves the next one.
      const warm = await build(minimal);
      expect(warm.code, warm.stderr).toBe(0);
      expect(warm.summary!.remoteCacheHits).toBeGreaterThan(20);
      expect(warm.summary!.executed).toBe(0);
    },
    4 * BUILD_TIMEOUT,
  );

  it(
    "an object deleted from R2 behind Kiln's back is uploaded again by the next build, which succeeds",
    async () => {
      const flags = [...grpc(), "--remote_instance_name=behind-back"];
      const cold = await build(flags, ["//..."], true);
      expect(cold.code, cold.stderr).toBe(0);
      // Outputs the build stored in R2 (a test's executable is its source file, never uploaded;
      // blobs of SMALL_BLOB_MAX_BYTES or less are kept in the CAS index, with no object to delete).
      const stored: string[] = [];
      for (const hash of new Set(Object.values(cold.outputs))) {
        const head = await fetch(`${stack.httpUrl}/cache/cas/${hash}`, { method: "HEAD" });
        if (head.status === 200 && Number(head.headers.get("content-length")) > SMALL_BLOB_MAX_BYTES) stored.push(hash);
      }
      const victims = stored.slice(0, 3);
      expect(victims.length).toBeGreaterThanOrEqual(2);
      for (const hash of victims) {
        const del = await run("npx", ["wrangler", "r2", "object", "delete", `kiln-cas/cas/default/${hash}`, "--local", "--persist-to", persistDir]);
        expect(del.code, del.out).toBe(0);
      }
      // The next build (fresh output base, downloading outputs): the hits whose outputs are gone turn
      // into misses (the failed download heals the index), run locally, and upload their outputs again.
      const next = await build(flags);
      expect(next.code, next.stderr).toBe(0);
      expect(next.summary!.remoteCacheHits).toBeGreaterThan(0);
      for (const hash of victims) expect((await fetch(`${stack.httpUrl}/cache/cas/${hash}`, { method: "HEAD" })).status, hash).toBe(200);
      const stats = await kiln(stack, "admin", "stats");
      expect(stats.out).toMatch(/healed [1-9]/);
      // Index and R2 agree again: a reconcile finds nothing to repair.
      const rec = await kiln(stack, "admin", "reconcile");
      expect(rec.code, rec.out).toBe(0);
      expect(rec.out).toMatch(/done in \d+ steps: [1-9]\d* objects listed, 0 rows added, 0 rows removed/);
    },
    4 * BUILD_TIMEOUT,
  );
});
