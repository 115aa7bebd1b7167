// The browser for the UI tests: Debian's Chromium driven by playwright-core, one page per test,
// with the page's console errors (failed requests among them) and uncaught exceptions collected,
// so a test can assert there were none.
import { existsSync, mkdirSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll } from "vitest";
import { requireTool, startStack, type Stack, type StackOptions } from "./stack.ts";

const CHROMIUM = "/usr/bin/chromium";
/** Screenshots: test artifacts, git-ignored. */
const ARTIFACTS = new URL("./artifacts/", import.meta.url).pathname;

export const haveChromium = () => requireTool("chromium (Debian package `chromium`)", () => existsSync(CHROMIUM));

async function launch(): Promise<Browser> {
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}

/**
 * A stack and a browser for the tests of the calling describe block (started before them, stopped
 * after them); `setup` runs once both are up, e.g. to put data in.
 */
export function uiStack(opts: StackOptions = {}, setup: (stack: Stack) => Promise<void> = async () => {}) {
  const env = {} as { stack: Stack; browser: Browser };
  beforeAll(async () => {
    env.stack = await startStack(opts);
    env.browser = await launch();
    await setup(env.stack);
  });
  afterAll(async () => {
    await env.browser?.close();
    await env.stack?.stop();
  });
  return env;
}

export interface TestPage {
  page: Page;
  /** Console errors and uncaught exceptions of the page so far. */
  errors: string[];
  shot(name: string): Promise<void>;
  close(): Promise<void>;
}

export async function openPage(browser: Browser): Promise<TestPage> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("pageerror", (e) => errors.push(e.message));
  return {
    page,
    errors,
    shot: async (name) => void (await page.screenshot({ path: `${ARTIFACTS}ui-${name}.png`, fullPage: true })),
    close: () => context.close(),
  };
}
