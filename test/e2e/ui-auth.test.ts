// The web UI against a Kiln with API keys, in real Chromium: without a key the page says the
// server needs one; a key entered in the page is kept in sessionStorage (never localStorage or a
// cookie), sent as `Authorization: Bearer`, and a new tab (a new session) starts without it.
import { describe, expect, it } from "vitest";
import { haveChromium, openPage, uiStack } from "./ui.ts";

const ok = haveChromium();
const KEY = "ui-e2e-read-key-0123456789-0123456789abcdef";

describe.skipIf(!ok)("web UI with API keys", () => {
  const env = uiStack({ vars: { API_KEYS: JSON.stringify([{ key: KEY, name: "ui", instances: [""], access: "read" }]) } });

  it("asks for a key, then sends the entered one as a bearer token, kept for the session only", async () => {
    const t = await openPage(env.browser);
    try {
      const { page } = t;
      const auth: (string | undefined)[] = [];
      page.on("request", (r) => r.url().includes("ResultStoreDownload/SearchInvocations") && auth.push(r.headers()["authorization"]));
      await page.goto(`${env.stack.httpUrl}/`);
      const alert = page.getByRole("alert");
      await alert.waitFor();
      expect(await alert.innerText()).toMatch(/UNAUTHENTICATED[\s\S]*needs an API key/);
      await page.getByLabel("API key").fill(KEY);
      await page.getByLabel("API key").press("Enter");
      await page.getByText("No invocations match.").waitFor();
      expect(auth.at(-1)).toBe(`Bearer ${KEY}`);
      expect(await page.evaluate(() => [(globalThis as any).sessionStorage.getItem("kiln.apiKey"), (globalThis as any).localStorage.length, (globalThis as any).document.cookie])).toEqual([KEY, 0, ""]);
      await t.shot("api-key");
      // another tab of the same browser profile is another session: no key there
      const other = await page.context().newPage();
      await other.goto(`${env.stack.httpUrl}/`);
      await other.getByRole("alert").waitFor();
      await other.close();
    } finally {
      await t.close();
    }
  });
});
