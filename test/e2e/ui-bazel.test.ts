// The web UI behind a real build: Bazel 4.2.3 `bazel test` of the failing workspace with
// --bes_backend through the bridge, the remote cache on and --bes_results_url pointing at the UI.
// The link Bazel prints opens, in real Chromium, on the failed test, whose log (uploaded by Bazel
// to the CAS) reads as the test wrote it.
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { bazelAvailable, disposeOutputBase, runBazel } from "./bazel.ts";
import { requireTool } from "./stack.ts";
import { haveChromium, openPage, uiStack } from "./ui.ts";

const FAILING_DIR = fileURLToPath(new URL("../bazel-failing/", import.meta.url));
const ok = haveChromium() && requireTool("bazel", bazelAvailable);

describe.skipIf(!ok)("web UI behind a real Bazel build", () => {
  const env = uiStack();

  it("opens Bazel's --bes_results_url link on the failed test and its log", async () => {
    const { stack } = env;
    const tmp = await mkdtemp(join(tmpdir(), "kiln-ui-bazel-"));
    const outputBase = join(tmp, "ob");
    let run;
    try {
      run = await runBazel(
        FAILING_DIR,
        [
          "test",
          `--remote_cache=grpc://${stack.grpcTarget}`,
          "--remote_instance_name=main",
          `--bes_backend=grpc://${stack.grpcTarget}`,
          `--bes_results_url=${stack.httpUrl}/invocations/`,
          `--invocation_id=${randomUUID()}`,
          "--build_metadata=LABELS=ui-e2e,real-bazel",
          "//...",
        ],
        { outputBase, timeoutMs: 5 * 60_000 },
      );
    } finally {
      await disposeOutputBase(FAILING_DIR, outputBase);
      await rm(tmp, { recursive: true, force: true });
    }
    expect(run.code, run.stderr).toBe(3); // tests failed
    const link = new RegExp(`Streaming build results to: (${stack.httpUrl}/invocations/[0-9a-f-]{36})`).exec(run.stderr)?.[1];
    expect(link, run.stderr).toBeDefined();

    const t = await openPage(env.browser);
    try {
      const { page } = t;
      await page.goto(link!);
      await expect.poll(() => page.locator("table.kv").first().innerText()).toMatch(/Status\s+FAILED[\s\S]*Labels\s+ui-e2e, real-bazel/);
      expect(await page.locator("pre.command").first().innerText()).toMatch(/^bazel test .*--build_metadata=LABELS=ui-e2e,real-bazel \/\/\.\.\.$/);
      const groups = page.locator(".target-groups .group h3");
      await groups.first().waitFor();
      expect(await groups.first().innerText()).toMatch(/^FAILED\s+1$/);
      const detail = page.getByRole("complementary", { name: "target //:failing_test" });
      const log = detail.getByLabel("test.log", { exact: true });
      await log.getByText("kiln-failing-test: this test fails on purpose").waitFor();
      expect(await log.innerText()).toContain("kiln-failing-test: stderr line");
      // Its test.xml, parsed: the failed case first, with Bazel's message.
      const failedCases = detail.getByRole("table", { name: "failed test cases" });
      await failedCases.waitFor();
      expect(await failedCases.innerText()).toMatch(/ERROR[\s\S]*exited with error code 1/);
      // The build's remote cache calls, linked by the invocation id Bazel sent with each.
      await page.getByText("Remote cache and execution").click();
      await expect.poll(() => page.locator(".remote-actions p").first().innerText().catch(() => "")).toMatch(/^\d+ actions: \d+ cache hits, [1-9]\d* misses, [1-9]\d* uploads/);
      const firstAction = page.locator(".remote-actions table a").first();
      const href = await firstAction.getAttribute("href");
      expect(href).toMatch(/^\/actions\/main\/[0-9a-f]{64}\/\d+$/);
      await t.shot("invocation-real-bazel");
      expect(t.errors).toEqual([]);
    } finally {
      await t.close();
    }
  }, 8 * 60_000);
});
