// Bazel 4.2.3 against Kiln as a remote cache, over the HTTP cache surface and over gRPC (bridge).
// Each build runs in a fresh output base, so nothing is reused locally: a cold build (salted, so
// it misses) fills the cache and a warm build must take every process from it, byte for byte.
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
import { requireTool, startStack } from "./stack.ts";

type Stack = Awaited<ReturnType<typeof startStack>>;

const haveBazel = requireTool("bazel", bazelAvailable);

const KEY = "kiln-test-key-1234-0123456789abc";
const BUILD_TIMEOUT = 5 * 60_000;

interface Build {
  code: number;
  stderr: string;
  summary: ProcessSummary;
  digests: Record<string, string>;
}

/** A scratch directory for one describe block: output bases and the output user root. */
function scratch(): { dir: () => string } {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kiln-bazel-"));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return { dir: () => dir };
}

/** Runs `fn` with a fresh output base, whose server is stopped and directory deleted afterwards. */
async function inFreshOutputBase<T>(dir: string, fn: (outputBase: string) => Promise<T>): Promise<T> {
  const outputBase = join(dir, `ob-${randomUUID()}`);
  try {
    return await fn(outputBase);
  } finally {
    await disposeOutputBase(WORKSPACE_DIR, outputBase);
  }
}

/** `bazel <command> <flags> <targets>` in a fresh output base: what ran and what it produced. */
function build(dir: string, command: "build" | "test", flags: string[], targets = ["//..."]): Promise<Build> {
  return inFreshOutputBase(dir, async (outputBase) => {
    const run = await runBazel(WORKSPACE_DIR, [command, ...flags, ...targets], { outputBase });
    const summary = parseProcessSummary(run.stderr);
    const digests = run.code === 0 ? await outputDigests(WORKSPACE_DIR, targets, { outputBase, flags }) : {};
    return { code: run.code, stderr: run.stderr, summary, digests };
  });
}

/** Flags that change every action key without changing any output, so a cold build misses. */
function salted(): string[] {
  const salt = randomUUID();
  return [`--action_env=SALT=${salt}`, `--host_action_env=SALT=${salt}`];
}

// Bazel reports cache trouble only as warnings; any means the cache misbehaved.
const CACHE_WARNING = /WARNING: .*Remote Cache/i;

function expectCold(cold: Build): void {
  expect(cold.code, cold.stderr).toBe(0);
  expect(cold.stderr).not.toMatch(CACHE_WARNING);
  expect(cold.summary.remoteCacheHits, cold.stderr).toBe(0);
  expect(cold.summary.executed).toBeGreaterThan(20);
}

/** Every process that ran in the cold build is a remote cache hit now, and outputs are identical. */
function expectWarm(warm: Build, cold: Build): void {
  expect(warm.code, warm.stderr).toBe(0);
  expect(warm.stderr).not.toMatch(CACHE_WARNING);
  expect(warm.summary.executed, warm.stderr).toBe(0);
  expect(warm.summary.remoteCacheHits).toBe(cold.summary.executed);
  expect(warm.digests).toEqual(cold.digests);
}

describe.skipIf(!haveBazel)("Bazel remote cache", () => {
  const tmp = scratch();
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it(
    "HTTP cache: a warm build from a fresh output base is all remote cache hits",
    async () => {
      const flags = [`--remote_cache=${stack.httpUrl}/cache/e2e/http`, ...salted()];
      const cold = await build(tmp.dir(), "test", flags);
      expectCold(cold);
      expectWarm(await build(tmp.dir(), "test", flags), cold);
    },
    BUILD_TIMEOUT,
  );

  it(
    "gRPC cache: a warm build from a fresh output base is all remote cache hits",
    async () => {
      const flags = [`--remote_cache=grpc://${stack.grpcTarget}`, "--remote_instance_name=some/instance", ...salted()];
      const cold = await build(tmp.dir(), "test", flags);
      expectCold(cold);
      expectWarm(await build(tmp.dir(), "test", flags), cold);
    },
    BUILD_TIMEOUT,
  );

  // A second salt re-runs every action, and each re-run uploads outputs the CAS already holds.
  // The server must still read every upload to its end before answering (Bazel's HTTP client
  // counts an early answer as a broken pipe and then skips the action-cache write), so the build
  // after that is all hits.
  const cases: [string, () => string[]][] = [
    ["HTTP cache", () => [`--remote_cache=${stack.httpUrl}/cache/e2e/again`]],
    ["gRPC cache", () => [`--remote_cache=grpc://${stack.grpcTarget}`, "--remote_instance_name=e2e/again-grpc"]],
  ];
  it.each(cases)(
    "%s: re-run actions upload cleanly and the next build is all remote cache hits",
    async (_, remote) => {
      expectCold(await build(tmp.dir(), "test", [...remote(), ...salted()]));
      const again = [...remote(), ...salted()];
      const rerun = await build(tmp.dir(), "test", again);
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(rerun.stderr).not.toMatch(CACHE_WARNING);
      expect(rerun.summary.executed).toBeGreaterThan(20);
      const warm = await build(tmp.dir(), "test", again);
      expect(warm.stderr).not.toMatch(CACHE_WARNING);
      expect(warm.summary.executed, warm.stderr).toBe(0);
      expect(warm.summary.remoteCacheHits).toBe(rerun.summary.executed + rerun.summary.remoteCacheHits);
      expect(warm.digests).toEqual(rerun.digests);
    },
    3 * BUILD_TIMEOUT,
  );
});

describe.skipIf(!haveBazel)("Bazel remote cache with API keys", () => {
  const tmp = scratch();
  let stack: Stack;
  let httpCache: string;
  // One salt for the whole block: the keyed warm builds read what the keyed cold build wrote.
  const salt = salted();
  beforeAll(async () => {
    stack = await startStack({ vars: { API_KEYS: JSON.stringify([{ key: KEY, instances: [""], access: "read-write" }]) } });
    httpCache = `${stack.httpUrl}/cache/keyed`;
  });
  afterAll(async () => {
    await stack?.stop();
  });

  // Bazel treats an unusable cache as a warning and builds locally: check the log and the hits.
  it(
    "without a key, the HTTP cache answers 401 and Bazel builds everything locally",
    async () => {
      const run = await build(tmp.dir(), "build", [`--remote_cache=${httpCache}`, ...salt], ["//:combined"]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toMatch(/WARNING: Reading from Remote Cache:\s*401 Unauthorized/);
      expect(run.summary.remoteCacheHits).toBe(0);
      expect(run.summary.executed).toBeGreaterThan(0);
    },
    BUILD_TIMEOUT,
  );

  // Over gRPC the first call, GetCapabilities, is refused, and Bazel 4.2.3 stops before building
  // (exit 34, a remote error) rather than falling back to local execution.
  it(
    "without a key, the gRPC cache answers UNAUTHENTICATED and Bazel stops",
    async () => {
      const flags = [`--remote_cache=grpc://${stack.grpcTarget}`, "--remote_instance_name=keyed", ...salt];
      const run = await inFreshOutputBase(tmp.dir(), (outputBase) =>
        runBazel(WORKSPACE_DIR, ["build", ...flags, "//:combined"], { outputBase }),
      );
      expect(run.code, run.stderr).toBe(34);
      expect(run.stderr).toMatch(/Failed to query remote execution capabilities: UNAUTHENTICATED/);
    },
    BUILD_TIMEOUT,
  );

  it(
    "with a bearer key a cold build fills the cache; basic auth and gRPC read it back",
    async () => {
      const bearer = `--remote_header=Authorization=Bearer ${KEY}`;
      const cold = await build(tmp.dir(), "test", [`--remote_cache=${httpCache}`, bearer, ...salt]);
      expectCold(cold);
      expectWarm(await build(tmp.dir(), "test", [`--remote_cache=${httpCache}`, bearer, ...salt]), cold);

      const basic = new URL(httpCache);
      basic.username = "user";
      basic.password = KEY;
      expectWarm(await build(tmp.dir(), "test", [`--remote_cache=${basic.href}`, ...salt]), cold);

      // The action cache is per instance, not per surface: gRPC sees what HTTP wrote.
      const grpc = [`--remote_cache=grpc://${stack.grpcTarget}`, "--remote_instance_name=keyed", bearer];
      expectWarm(await build(tmp.dir(), "test", [...grpc, ...salt]), cold);
    },
    BUILD_TIMEOUT,
  );
});
