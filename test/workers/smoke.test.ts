import { SELF } from "cloudflare:test";
import { expect, it } from "vitest";

it("serves healthz", async () => {
  const r = await SELF.fetch("http://kiln/healthz");
  expect(await r.json()).toEqual({ ok: true, auth: "open" });
});
