// The web UI in real Chromium against the real stack: the invocation page of a failing build
// (failed test first, its log readable with ANSI colours), searching invocations by label and
// status, an action page with its input tree walked by keyboard, the CAS page, and the API key
// field. Data goes in through Kiln's public APIs (ui-data.ts). Screenshots: test/e2e/artifacts/.
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { clients, fixtureStream, ingest, ingestFixture, INSTANCE, putInvocations, putSampleAction, type SampleAction } from "./ui-data.ts";
import { haveChromium, openPage, uiStack, type TestPage } from "./ui.ts";

const ok = haveChromium();

describe.skipIf(!ok)("web UI", () => {
  let t: TestPage;
  let failing: string;
  let passing: string;
  let sample: SampleAction;

  const env = uiStack({}, async (stack) => {
    const c = clients(stack.httpUrl);
    failing = await ingestFixture(c, "failing-test", {
      labels: ["ui-e2e", "nightly"],
      testLog: "exec ${PAGER:-/usr/bin/less} \"$0\" || exit 1\n\x1b[1mExecuting tests from //:failing_test\x1b[0m\n\x1b[31mkiln-failing-test: this test fails on purpose\x1b[0m\nkiln-failing-test: stderr line\n",
    });
    passing = await ingestFixture(c, "sample-test", { labels: ["ui-e2e", "release"] });
    sample = await putSampleAction(c);
  });
  afterEach(async () => {
    await t?.close();
  });

  it("serves the app at its routes and leaves every other path to the worker", async () => {
    const get = (path: string) => fetch(`${env.stack.httpUrl}${path}`, { headers: { "sec-fetch-mode": "navigate", accept: "text/html" } });
    for (const path of ["/", `/invocations/${failing}`, `/actions/${INSTANCE}/${sample.action.hash}/${sample.action.sizeBytes}`, "/operations", "/cas", `/cas/${INSTANCE}/${sample.src.hash}/${sample.src.sizeBytes}`]) {
      const res = await get(path);
      expect([path, res.status, res.headers.get("content-type")]).toEqual([path, 200, "text/html; charset=utf-8"]);
      expect(await res.text()).toContain('<script type="module" src="/ui/main.js">');
    }
    expect((await get("/ui/main.js")).headers.get("content-type")).toMatch(/javascript/);
    // API paths, even asked for as a page, are the worker's
    expect(await (await get("/healthz")).json()).toMatchObject({ ok: true });
    expect((await get("/v1/operations")).headers.get("content-type")).toMatch(/json/);
    const missing = await get("/no/such/page");
    expect([missing.status, missing.headers.get("content-type")]).toEqual([404, "application/json"]);
    const blob = await get(`/${INSTANCE}/blobs/${sample.src.hash}/${sample.src.sizeBytes}`);
    expect([blob.status, blob.headers.get("content-type")]).toEqual([200, "application/octet-stream"]);
  });

  it("shows the failing build's failed test first, and its log with colours", async () => {
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/invocations/${failing}`);
    await page.getByRole("heading", { name: `Invocation ${failing}` }).waitFor();
    // the summary: status, command line
    await expect.poll(() => page.locator("table.kv").first().innerText()).toMatch(/Status\s+FAILED/);
    // the command line: command, explicit options and targets, the whole line folded away
    const command = await page.locator("pre.command").first().innerText();
    expect(command).toMatch(/^bazel test .*--remote_instance_name=main.* \/\/\.\.\.$/);
    expect(command).not.toContain("--client_env");
    expect(await page.locator("details", { hasText: "Full command line" }).textContent()).toContain("--client_env");
    // properties (folded): the build metadata that carried the labels
    expect(await page.locator("details", { hasText: "Properties" }).textContent()).toMatch(/build_metadata\.LABELS\s*ui-e2e,nightly/);
    // targets grouped by status, failures first
    const groups = page.locator(".target-groups .group h3");
    await groups.first().waitFor();
    expect(await groups.first().innerText()).toMatch(/^FAILED\s+1$/);
    const firstTarget = page.locator(".target-groups table.targets a").first();
    expect(await firstTarget.innerText()).toBe("//:failing_test");
    // the failed test is opened: its attempts, and its log through ResultStoreFileDownload
    const detail = page.getByRole("complementary", { name: "target //:failing_test" });
    await detail.getByRole("table", { name: "test results" }).waitFor();
    expect(await detail.getByRole("table", { name: "test results" }).innerText()).toMatch(/FAILED/);
    const log = detail.locator(".log", { hasText: "this test fails on purpose" });
    await log.waitFor();
    const red = log.locator("span", { hasText: "kiln-failing-test: this test fails on purpose" });
    expect(await red.evaluate((el) => (globalThis as any).getComputedStyle(el).color)).toBe("rgb(255, 123, 114)");
    expect(await log.innerText()).not.toContain("\x1b");
    await t.shot("invocation-failing");
    expect(t.errors).toEqual([]);
  });

  it("opens nothing on a passing build, and a picked target's results; a log not in this CAS is a clear error", async () => {
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/invocations/${passing}`);
    const groups = page.locator(".target-groups .group h3");
    await groups.first().waitFor();
    expect((await groups.allInnerTexts()).map((g) => g.split(/\s+/)[0])).toEqual(["PASSED", "BUILT"]);
    expect(await page.getByRole("complementary").count()).toBe(0);
    await page.locator(".target-groups").getByRole("link", { name: "//:combined_test" }).click();
    await page.waitForURL(/\?target=%2F%2F%3Acombined_test$/);
    const detail = page.getByRole("complementary", { name: "target //:combined_test" });
    const results = detail.getByRole("table", { name: "test results" });
    await results.waitFor();
    expect(await results.innerText()).toMatch(/PASSED/);
    // the recording's logs went to the recording stack's CAS, not this one
    await detail.getByRole("alert").first().waitFor();
    expect(await detail.getByRole("alert").first().innerText()).toMatch(/^NOT_FOUND: /);
  });

  it("tails a large log and pages back through it on request", async () => {
    // 3 × 64 KiB and a bit: the last chunk first (GetFileTail), three more (GetFile) reach line 0
    const lines = Array.from({ length: 4000 }, (_, i) => `line ${String(i).padStart(5, "0")} ${"x".repeat(38)}\n`);
    const big = await ingestFixture(clients(env.stack.httpUrl), "failing-test", { labels: ["ui-e2e", "big-log"], testLog: lines.join("") });
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/invocations/${big}`);
    const log = page.getByLabel("test.log", { exact: true });
    await log.getByText("line 03999").waitFor();
    expect(await log.innerText()).not.toContain("line 00000 ");
    const more = log.getByRole("button", { name: /^Show [0-9.]+ KiB more$/ });
    for (let i = 0; i < 3; i++) {
      expect(await log.innerText()).toMatch(/KiB before this are not shown/);
      const before = (await log.innerText()).length;
      await more.click();
      await expect.poll(async () => (await log.innerText()).length).toBeGreaterThan(before);
    }
    await log.getByText("line 00000").waitFor();
    expect(await log.getByRole("button").count()).toBe(0);
    // every line once, in order
    const shown = (await log.locator("pre").innerText()).split("\n").filter(Boolean);
    expect(shown).toEqual(lines.map((l) => l.trimEnd()));
    expect(t.errors).toEqual([]);
  });

  it("follows a build still uploading, and stops refreshing once it is finalized", async () => {
    const c = clients(env.stack.httpUrl);
    const { id, events, requests } = await fixtureStream(c, "failing-test", { labels: ["ui-e2e", "live"], testLog: "the live build's test log\n" });
    // everything before the test's result (request i carries event i): the build is running
    const cut = events.findIndex((e) => e.payload.case === "testResult");
    expect(cut).toBeGreaterThan(0);
    await ingest(c, requests.slice(0, cut));
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/invocations/${id}`);
    const live = page.getByText(/Still uploading/);
    await live.waitFor();
    expect(await page.locator("table.kv").first().innerText()).not.toMatch(/Status\s+FAILED/);
    await t.shot("invocation-live");
    // the rest of the stream, then finalize: the page catches up without a reload
    await ingest(c, requests.slice(cut));
    await expect.poll(() => page.locator("table.kv").first().innerText(), { timeout: 30_000 }).toMatch(/Status\s+FAILED/);
    await live.waitFor({ state: "detached", timeout: 30_000 });
    // the failed test, which arrived after the page opened, opens with its log
    await page.getByRole("complementary", { name: "target //:failing_test" }).getByText("the live build's test log").waitFor();
    expect(t.errors).toEqual([]);
  });

  it("waits on an invocation that does not exist yet (Bazel prints the link first), then shows it", async () => {
    const id = randomUUID();
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/invocations/${id}`);
    await page.getByText(/No such invocation yet/).waitFor();
    const c = clients(env.stack.httpUrl);
    const { requests } = await fixtureStream(c, "failing-test", { labels: ["ui-e2e", "late"], testLog: "late log\n", id });
    await ingest(c, requests);
    await expect.poll(() => page.locator("table.kv").first().innerText(), { timeout: 30_000 }).toMatch(/Status\s+FAILED/);
    await page.getByRole("complementary", { name: "target //:failing_test" }).getByText("late log").waitFor();
    expect(await page.getByText(/No such invocation yet/).count()).toBe(0);
  });

  it("finds invocations by label and by status, newest first, from the search form", async () => {
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/`);
    const table = page.getByRole("table", { name: "invocations" });
    await table.waitFor();
    expect(await table.innerText()).toContain(failing);
    expect(await table.innerText()).toContain(passing);
    // newest first: the Started column (7th) never goes up
    const started = (await table.locator("tbody tr td:nth-child(7)").allInnerTexts()).map((s) => Date.parse(s));
    expect(started.length).toBeGreaterThanOrEqual(2);
    expect(started.every((ms) => !Number.isNaN(ms))).toBe(true);
    expect([...started].sort((a, b) => b - a)).toEqual(started);
    // by label, typed and submitted with the keyboard
    await page.getByLabel("Label").fill("nightly");
    await page.getByLabel("Label").press("Enter");
    await page.waitForURL(/label=nightly/);
    await expect.poll(async () => (await table.innerText()).includes(passing)).toBe(false);
    expect(await table.innerText()).toContain(failing);
    await t.shot("search-label");
    // by status, from the URL
    await page.goto(`${env.stack.httpUrl}/?status=PASSED&label=ui-e2e`);
    await table.waitFor();
    expect(await table.innerText()).toContain(passing);
    expect(await table.innerText()).not.toContain(failing);
    // the query language box
    await page.goto(`${env.stack.httpUrl}/?q=${encodeURIComponent(`id.invocation_id = "${failing}"`)}`);
    await table.waitFor();
    expect(await table.locator("tbody tr").count()).toBe(1);
    await table.getByRole("link", { name: failing }).click();
    await page.getByRole("heading", { name: `Invocation ${failing}` }).waitFor();
    expect(t.errors).toEqual([]);
  });

  it("pages through invocations, 50 at a time, older and back to newer", async () => {
    const ids = await putInvocations(clients(env.stack.httpUrl), "paging", 57, Date.UTC(2026, 0, 1));
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/?label=paging`);
    const table = page.getByRole("table", { name: "invocations" });
    const ids0 = () => table.locator("tbody tr td:nth-child(2)").allInnerTexts();
    await table.waitFor();
    const first = await ids0();
    expect(first).toEqual(ids.slice(-50).reverse());
    await page.getByRole("button", { name: "Older ›" }).click();
    await expect.poll(ids0).toEqual(ids.slice(0, 7).reverse());
    expect(await page.getByRole("button", { name: "Older ›" }).isDisabled()).toBe(true);
    await page.getByRole("button", { name: "‹ Newer" }).click();
    await expect.poll(ids0).toEqual(first);
    expect(t.errors).toEqual([]);
  });

  it("shows an action: command, platform, input tree walked with the keyboard, result and timeline", async () => {
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/actions/${INSTANCE}/${sample.action.hash}/${sample.action.sizeBytes}`);
    const args = page.getByRole("list", { name: "arguments" });
    await args.waitFor();
    expect(await args.innerText()).toBe("/bin/sh\nrun.sh\n--verbose");
    expect(await page.locator("table.kv").nth(1).innerText()).toContain("C.UTF-8");
    expect(await page.locator("table.kv").first().innerText()).toContain("OSFamily=linux");
    const tree = page.getByRole("list", { name: "input tree" });
    await tree.waitFor();
    expect(await tree.innerText()).toContain("run.sh");
    expect(await tree.innerText()).not.toContain("main.c");
    // open src/ and src/lib/ with the keyboard
    await tree.getByRole("button", { name: "src/" }).focus();
    await page.keyboard.press("Enter");
    await tree.getByText("main.c").waitFor();
    await tree.getByRole("button", { name: "lib/" }).focus();
    await page.keyboard.press("Enter");
    await tree.getByText("util.h").waitFor();
    // the cached result: exit code, output download, stdout, timeline
    const outputs = page.getByRole("list", { name: "outputs" });
    await outputs.waitFor();
    const download = outputs.getByRole("link", { name: "download" });
    const res = await fetch(new URL((await download.getAttribute("href"))!, env.stack.httpUrl));
    expect(await res.text()).toBe("hello, output\n");
    const stdout = page.locator(".log", { hasText: sample.stdout });
    await stdout.waitFor();
    expect(await page.getByLabel("execution timeline").innerText()).toMatch(/execution\s+1\.00 s/);
    await t.shot("action");
    // the output directory, a Tree: its child directory comes from the Tree itself
    await outputs.getByRole("link", { name: "out/dir/" }).click();
    const tree2 = page.getByRole("list", { name: "tree", exact: true });
    await tree2.getByRole("button", { name: "gen/" }).click();
    await tree2.getByText("gen.txt").waitFor();
    expect(await page.getByText("1 child directories").count()).toBe(1);
    expect(t.errors).toEqual([]);
  });

  it("opens a digest on the CAS page as a Directory, as raw bytes, and as an Action", async () => {
    t = await openPage(env.browser);
    const { page } = t;
    await page.goto(`${env.stack.httpUrl}/cas`);
    await page.getByLabel("Instance").fill(INSTANCE);
    await page.getByLabel("Hash").fill(sample.src.hash);
    await page.getByLabel("Size").fill(String(sample.src.sizeBytes));
    await page.getByLabel("View as").selectOption("directory");
    await page.getByRole("button", { name: "Open" }).click();
    const tree = page.getByRole("list", { name: "directory" });
    await tree.waitFor();
    expect(await tree.innerText()).toMatch(/lib\/[\s\S]*main\.c/);
    await t.shot("cas-directory");
    // a file of it, as text and hex
    await tree.getByRole("link", { name: "main.c" }).click();
    await page.getByLabel("text").waitFor();
    expect(await page.getByLabel("text").innerText()).toContain("int main(void)");
    // the hex dump is folded away when the bytes are text
    expect(await page.getByLabel("hex").isVisible()).toBe(false);
    expect(await page.getByLabel("hex").textContent()).toMatch(/^00000000  23 69 6e 63 6c 75 64 65 20 22 6c 69 62 2f 75 74  #include "lib\/ut$/m);
    // the same Directory as raw bytes is not text: shown as hex
    await page.goto(`${env.stack.httpUrl}/cas/${INSTANCE}/${sample.src.hash}/${sample.src.sizeBytes}?as=raw`);
    await page.getByLabel("hex").waitFor();
    expect(await page.getByLabel("hex").isVisible()).toBe(true);
    // the action's digest as an Action: its command and input root
    await page.goto(`${env.stack.httpUrl}/cas/${INSTANCE}/${sample.action.hash}/${sample.action.sizeBytes}?as=action`);
    await page.getByRole("list", { name: "arguments" }).waitFor();
    expect(await page.getByRole("list", { name: "input tree" }).innerText()).toContain("run.sh");
    expect(t.errors).toEqual([]);
    // a missing blob is a clear error, not a blank page
    await page.goto(`${env.stack.httpUrl}/cas/${INSTANCE}/${"0".repeat(64)}/5?as=directory`);
    await page.getByRole("alert").waitFor();
    expect(await page.getByRole("alert").innerText()).toMatch(/NOT_FOUND/);
  });
});
