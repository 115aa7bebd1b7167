// Hands the recorded BEP streams (test/fixtures/bep/*.bep, real Bazel 4.2.3 runs) to the workerd
// tests, which cannot read files: base64 through vitest's provide/inject.
import { readdir, readFile } from "node:fs/promises";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    bepFixtures: Record<string, string>;
  }
}

export default async function setup(project: TestProject) {
  const dir = new URL("../fixtures/bep/", import.meta.url).pathname;
  const fixtures: Record<string, string> = {};
  for (const name of await readdir(dir)) {
    if (name.endsWith(".bep")) fixtures[name.replace(/\.bep$/, "")] = (await readFile(dir + name)).toString("base64");
  }
  project.provide("bepFixtures", fixtures);
}
