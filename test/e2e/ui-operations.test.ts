// The operations page in real Chromium: an operation started by a client (Execute over Connect)
// appears as QUEUED, its stage follows the WaitExecution stream the page holds, and Cancel from
// the page completes it (CANCELLED), shown live without a reload. No runner is connected (the
// runner wiring is changing on main), so the operation waits in the queue until cancelled.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { ActionSchema, CommandSchema, DirectorySchema, Execution } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { clients, INSTANCE, putMessage } from "./ui-data.ts";
import { haveChromium, openPage, uiStack } from "./ui.ts";

const ok = haveChromium();

describe.skipIf(!ok)("web UI: operations", () => {
  const env = uiStack();

  it("shows a queued operation live and cancels it from the page", async () => {
    const c = clients(env.stack.httpUrl);
    const command = await putMessage(c, CommandSchema, { arguments: ["/bin/sh", "-c", "echo hi"], platform: { properties: [] } });
    const inputRoot = await putMessage(c, DirectorySchema, {});
    const action = await putMessage(c, ActionSchema, { commandDigest: command, inputRootDigest: inputRoot, doNotCache: true });
    const execution = createClient(Execution, createConnectTransport({ baseUrl: env.stack.httpUrl, httpVersion: "1.1" }));
    const ac = new AbortController();
    const stream = execution.execute({ instanceName: INSTANCE, actionDigest: action, skipCacheLookup: true }, { signal: ac.signal })[Symbol.asyncIterator]();
    const first = (await stream.next()).value!;
    ac.abort(); // the operation goes on without this client
    const name = first.name;

    const t = await openPage(env.browser);
    try {
      const { page } = t;
      await page.goto(`${env.stack.httpUrl}/operations?instance=${INSTANCE}`);
      const row = page.locator(`tr[data-operation="${name}"]`);
      await row.waitFor();
      await expect.poll(() => row.locator(".status").innerText()).toBe("QUEUED");
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
