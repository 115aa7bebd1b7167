// The runner's file cache in each staging mode (file-cache.ts): what an action does to its staged
// input cannot reach the cache, nor the next action's copy.
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FileCache } from "../../container/runner/file-cache.ts";

const bytes = Buffer.from("the original input bytes\n");
const digest = { hash: createHash("sha256").update(bytes).digest("hex"), size: bytes.byteLength };

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-file-cache-"));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function setup(name: string, staging: ConstructorParameters<typeof FileCache>[2]) {
  const cache = new FileCache(path.join(dir, name, "cache"), 1 << 20, staging);
  await cache.init();
  const work = path.join(dir, name, "work");
  await fs.mkdir(work, { recursive: true });
  let fetches = 0;
  const fetch = async (_d: unknown, dest: string) => {
    fetches++;
    await fs.writeFile(dest, bytes);
  };
  const stage = async (file: string) => {
    await cache.materialize(digest, false, path.join(work, file), fetch);
    return path.join(work, file);
  };
  return { stage, fetches: () => fetches, cached: path.join(dir, name, "cache", "blobs", digest.hash) };
}

/** What an action running as the runner's own uid can do to a staged input. */
async function vandalize(file: string) {
  await fs.chmod(file, 0o644);
  await fs.writeFile(file, "poisoned!");
}

describe("file cache", () => {
  it("copy mode: an action rewriting its copy changes neither the cache nor the next copy", async () => {
    const c = await setup("copy", { mode: "copy", verify: false });
    const first = await c.stage("a");
    expect((await fs.stat(first)).ino).not.toBe((await fs.stat(c.cached)).ino);
    await vandalize(first);
    const second = await c.stage("b");
    expect(await fs.readFile(second)).toEqual(bytes);
    expect(await fs.readFile(c.cached)).toEqual(bytes);
    expect((await fs.stat(second)).mode & 0o777).toBe(0o444);
    expect(c.fetches()).toBe(1);
  });

  it("verify mode: a cached file changed behind the runner's back is fetched again, not staged", async () => {
    const c = await setup("verify", { mode: "copy", verify: true });
    await c.stage("a");
    // Same size and mode, other bytes: only the hash can tell.
    await fs.chmod(c.cached, 0o644);
    await fs.writeFile(c.cached, Buffer.from("THE ORIGINAL INPUT BYTES\n"));
    await fs.chmod(c.cached, 0o444);
    const second = await c.stage("b");
    expect(await fs.readFile(second)).toEqual(bytes);
    expect(c.fetches()).toBe(2);
  });

  it("link mode: inputs are hardlinks of the read-only cache file (safe only when actions run as another uid)", async () => {
    const c = await setup("link", { mode: "link", verify: false });
    const first = await c.stage("a");
    const [st, cached] = [await fs.stat(first), await fs.stat(c.cached)];
    expect(st.ino).toBe(cached.ino);
    expect(st.mode & 0o777).toBe(0o444);
    expect(cached.uid).toBe(process.getuid!());
  });
});
