// The operations page in real Chromium: an operation started by a client (Execute over Connect)
// appears as QUEUED; its stage follows the WaitExecution stream the page holds as a runner takes
// it (EXECUTING) and completes it (COMPLETED), with its live stdout streaming into the page; and
// Cancel from the page completes a queued one (CANCELLED). The runner is one the test drives by
// hand (ui-runner.ts), so every step happens when the test says.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { ActionSchema, CommandSchema, DirectorySchema, Execution } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { clients, INSTANCE, putBlobs, putMessage } from "./ui-data.ts";
import { connectHandRunner, runnerKeysVar, type HandRunner } from "./ui-runner.ts";
import { haveChromium, openPage, uiStack } from "./ui.ts";

const ok = haveChromium();

describe.skipIf(!ok)("web UI: operations", () => {
  const env = uiStack({ vars: { RUNNER_KEYS: runnerKeysVar() } });

  /** Starts an operation of `echo <word>` as a client would, and leaves it running; its name. */
  async function execute(word: string) {
    const c = clients(env.stack.httpUrl);
    const command = await putMessage(c, CommandSchema, { arguments: ["/bin/sh", "-c", `echo ${word}`] });
    const inputRoot = await putMessage(c, DirectorySchema, {});
    const action = await putMessage(c, ActionSchema, { commandDigest: command, inputRootDigest: inputRoot, doNotCache: true });
    const execution = createClient(Execution, createConnectTransport({ baseUrl: env.stack.httpUrl, httpVersion: "1.1" }));
    const ac = new AbortController();
    const stream = execution.execute({ instanceName: INSTANCE, actionDigest: action, skipCacheLookup: true }, { signal: ac.signal })[Symbol.asyncIterator]();
    const first = (await stream.next()).value!;
    ac.abort(); // the operation goes on without this client
    return { name: first.name, action };
  }

  /** The operations page of INSTANCE, once it shows operation `name` as QUEUED: its row. */
  async function queuedRow(page: Page, name: string) {
    await page.goto(`${env.stack.httpUrl}/operations?instance=${INSTANCE}`);
    const row = page.locator(`tr[data-operation="${name}"]`);
    await row.waitFor();
    await expect.poll(() => row.locator(".status").innerText()).toBe("QUEUED");
    return row;
  }

  it("shows an operation go QUEUED → EXECUTING → COMPLETED, with its live stdout", async () => {
    const { name } = await execute("run");
    const t = await openPage(env.browser);
    let r: HandRunner | undefined;
    try {
      const { page } = t;
      const row = await queuedRow(page, name);
      // a runner comes: it takes the operation
      r = await connectHandRunner(env.stack.httpUrl);
      const a = await r.assignment();
      expect(a.operation).toBe(name);
      await expect.poll(() => row.locator(".status").innerText()).toBe("EXECUTING");
      await r.stdout(a, "\x1b[32mstep 1\x1b[0m done\n");
      await row.getByRole("button", { name: "Live output" }).click();
      const live = page.getByLabel("live output");
      await live.getByText("step 1").waitFor();
      await r.stdout(a, "step 2 done\n");
      await live.getByText("step 2 done").waitFor();
      await t.shot("operations-executing");
      const [stdout] = await putBlobs(clients(env.stack.httpUrl), [new TextEncoder().encode("step 1 done\nstep 2 done\n")]);
      await r.complete(a, stdout!);
      await expect.poll(() => row.locator(".status").innerText()).toBe("COMPLETED");
      expect(await row.innerText()).toMatch(/exit 0/);
      expect(await row.locator(".status").getAttribute("class")).toContain("status-good");
      expect(t.errors).toEqual([]);
    } finally {
      r?.close();
      await t.close();
    }
  });

  it("shows a queued operation live and cancels it from the page", async () => {
    const { name, action } = await execute("cancel-me");
    const t = await openPage(env.browser);
    try {
      const { page } = t;
      const row = await queuedRow(page, name);
      // the action link carries the instance the page lists
      expect(await row.getByRole("link").getAttribute("href")).toBe(`/actions/${INSTANCE}/${action.hash}/${action.sizeBytes}`);
      await t.shot("operations-queued");
      await row.getByRole("button", { name: "Cancel" }).click();
      // the page's WaitExecution stream brings the end: no reload
      await expect.poll(() => row.locator(".status").innerText(), { timeout: 20_000 }).toBe("COMPLETED");
      expect(await row.innerText()).toMatch(/CANCELLED/);
      expect(await row.locator(".status").getAttribute("class")).toContain("status-bad");
      expect(await row.getByRole("button", { name: "Cancel" }).count()).toBe(0);
      // the next poll no longer lists it (done=false): the row stays, with its final state
      await page.waitForResponse((r) => r.url().endsWith("/google.longrunning.Operations/ListOperations"));
      await page.waitForResponse((r) => r.url().endsWith("/google.longrunning.Operations/ListOperations"));
      expect(await row.locator(".status").innerText()).toBe("COMPLETED");
      await t.shot("operations-cancelled");
      expect(t.errors).toEqual([]);
    } finally {
      await t.close();
    }
  });
});

