// The invocation page at scale, in real Chromium: 10,000 targets (20,000 configured targets)
// uploaded with UploadBatch. The first rows show after the first page of ListConfiguredTargets,
// the counts fill in as the pages come, and the DOM holds one page of rows per group however many
// there are. Times are printed (measurements, not assertions).
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { call, resultStoreClients, token, uploadInvocation } from "./resultstore-load.ts";
import { haveChromium, openPage, uiStack } from "./ui.ts";

const ok = haveChromium();
const TARGETS = 10_000;

describe.skipIf(!ok)("web UI at 10,000 targets", () => {
  let id: string;
  const env = uiStack({}, async (stack) => {
    const { upload, close } = resultStoreClients(stack.grpcTarget);
    try {
      const tok = randomUUID();
      id = randomUUID();
      const inv = await call(upload, "CreateInvocation", { invocation_id: id, authorization_token: tok, initial_resume_token: token(0), invocation: {} });
      const started = performance.now();
      await uploadInvocation(upload, inv.name, tok, TARGETS);
      console.log(`[ui-scale] uploaded ${TARGETS} targets in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      close();
    }
  });

  it("shows the first rows after one page, all counts after all pages, one page of rows in the DOM", async () => {
    const t = await openPage(env.browser);
    try {
      const { page } = t;
      const started = performance.now();
      await page.goto(`${env.stack.httpUrl}/invocations/${id}`);
      const rows = page.locator(".target-groups table.targets tbody tr");
      await rows.first().waitFor();
      const firstRowsMs = performance.now() - started;
      await page.getByRole("heading", { name: `Targets (${TARGETS * 2})` }).waitFor({ timeout: 120_000 });
      const allMs = performance.now() - started;
      console.log(`[ui-scale] ${TARGETS * 2} configured targets: first rows after ${firstRowsMs.toFixed(0)} ms, all counted after ${allMs.toFixed(0)} ms`);
      expect(await page.getByRole("button", { name: `PASSED ${TARGETS * 2}` }).count()).toBe(1);
      expect(await rows.count()).toBe(100);
      // page on with the keyboard: the next page's rows replace this page's
      const first = await rows.first().innerText();
      await page.getByRole("button", { name: "Next ›" }).focus();
      await page.keyboard.press("Enter");
      await expect.poll(() => rows.first().innerText()).not.toBe(first);
      expect(await page.getByText("page 2 of 200").count()).toBe(1);
      expect(await rows.count()).toBe(100);
      await t.shot("invocation-10000-targets");
      expect(t.errors).toEqual([]);
    } finally {
      await t.close();
    }
  });
});
