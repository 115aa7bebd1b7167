// Input files by digest on local disk, shared by all actions of this runner: each file is fetched
// once and kept read-only. How a file reaches a work directory depends on who can write it:
// - "link" (the runner is root, actions run as other uids, see sandbox.ts): a hardlink of the
//   root-owned 0444/0555 file; the action can neither write nor chmod it, so sharing the inode is
//   safe and staging costs no copy.
// - "copy" (actions run as the runner's uid): a copy (a reflink where the filesystem can, else a
//   full copy). Checking the hash on reuse instead would not do: with a shared inode, an action
//   could rewrite the file while another action is running with it.
// - `verify` (no root and no bwrap, so the action can reach the cache itself by its path): each
//   reuse also re-hashes the cached file, and a changed one is fetched again.
// Beyond the size bound the least recently used files are evicted; a work directory's link keeps
// its own copy of the inode alive.
import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { errnoOf } from "./errors.ts";
import { blobKey, type BlobDigest } from "../../src/shared/digest.ts";
import { digestOfFile } from "./hash.ts";

/** Puts the blob's bytes into a new file at the given path (and checks them). */
export type Fetcher = (d: BlobDigest, dest: string) => Promise<void>;

const modeOf = (executable: boolean) => (executable ? 0o555 : 0o444);

/** A private copy: a reflink where the filesystem can (instant, no extra space), else the bytes. */
async function copy(src: string, dest: string, executable: boolean): Promise<void> {
  await fs.copyFile(src, dest, fsConstants.COPYFILE_FICLONE | fsConstants.COPYFILE_EXCL);
  await fs.chmod(dest, modeOf(executable));
}

/** Temp files older than this were left by a process that died; removed at start. */
const STALE_TMP_MS = 3600_000;

export class FileCache {
  private readonly blobs: string;
  private readonly tmp: string;
  /** Cached files by name, least recently used first (Map keeps insertion order). */
  private readonly entries = new Map<string, number>();
  private readonly pending = new Map<string, Promise<void>>();
  private readonly pins = new Map<string, number>();
  private total = 0;

  constructor(
    dir: string,
    private readonly maxBytes: number,
    private readonly staging: { mode: "link" | "copy"; verify: boolean },
  ) {
    this.blobs = path.join(dir, "blobs");
    this.tmp = path.join(dir, "tmp");
  }

  get bytes() {
    return this.total;
  }

  /** Creates the directories and adopts files left by an earlier run, oldest first. */
  async init(): Promise<void> {
    await fs.mkdir(this.blobs, { recursive: true });
    await fs.mkdir(this.tmp, { recursive: true });
    // Only the runner goes in here (actions get links or copies of the files).
    await fs.chmod(path.dirname(this.blobs), 0o700);
    const now = Date.now();
    for (const name of await fs.readdir(this.tmp)) {
      const p = path.join(this.tmp, name);
      const st = await fs.stat(p).catch(() => null);
      if (st && now - st.mtimeMs > STALE_TMP_MS) await fs.rm(p, { force: true });
    }
    const found: { name: string; size: number; at: number }[] = [];
    for (const name of await fs.readdir(this.blobs)) {
      const st = await fs.stat(path.join(this.blobs, name)).catch(() => null);
      if (st?.isFile()) found.push({ name, size: st.size, at: st.mtimeMs });
    }
    found.sort((a, b) => a.at - b.at);
    for (const f of found) this.add(f.name, f.size);
    await this.evict();
  }

  /** Places the blob at `dest` (which must not exist) with the given executable bit. */
  async materialize(d: BlobDigest, executable: boolean, dest: string, fetch: Fetcher): Promise<void> {
    const name = d.hash + (executable ? ".x" : "");
    this.pin(name);
    try {
      for (let attempt = 0; ; attempt++) {
        const src = await this.ensure(name, d, executable, fetch);
        try {
          if (this.staging.mode === "copy") await copy(src, dest, executable);
          else await fs.link(src, dest);
          return;
        } catch (e) {
          const code = errnoOf(e);
          if (code === "ENOENT" && attempt === 0) {
            // Evicted by another runner sharing the directory: fetch it again.
            this.remove(name);
            continue;
          }
          if (code !== "EXDEV" && code !== "EMLINK" && code !== "EPERM") throw e;
          await copy(src, dest, executable);
          return;
        }
      }
    } finally {
      this.unpin(name);
      await this.evict();
    }
  }

  /** The cached file's path, fetching it first if needed. */
  private async ensure(name: string, d: BlobDigest, executable: boolean, fetch: Fetcher): Promise<string> {
    const file = path.join(this.blobs, name);
    for (;;) {
      const inFlight = this.pending.get(name);
      if (inFlight) {
        // Another action's fetch; if it failed (cancelled, say), this one tries on its own.
        await inFlight.catch(() => undefined);
        continue;
      }
      if (this.entries.has(name)) {
        // An action may have chmod-ed or truncated its hardlink (the same inode): check cheaply.
        const st = await fs.stat(file).catch(() => null);
        const intact =
          st !== null &&
          st.size === d.size &&
          (st.mode & 0o777) === modeOf(executable) &&
          (!this.staging.verify || blobKey(await digestOfFile(file).catch(() => ({ hash: "", size: -1 }))) === blobKey(d));
        if (intact) {
          this.touch(name);
          return file;
        }
        this.remove(name);
        await fs.rm(file, { force: true });
      }
      const p = this.fill(name, file, d, executable, fetch);
      this.pending.set(name, p);
      try {
        await p;
      } finally {
        this.pending.delete(name);
      }
      return file;
    }
  }

  private async fill(name: string, file: string, d: BlobDigest, executable: boolean, fetch: Fetcher): Promise<void> {
    const tmp = path.join(this.tmp, `${name}.${process.pid}.${randomBytes(6).toString("hex")}`);
    try {
      // The other variant (executable or not) may be here already: copy it rather than fetch again.
      const other = executable ? d.hash : `${d.hash}.x`;
      const copied =
        this.entries.has(other) && (await fs.copyFile(path.join(this.blobs, other), tmp).then(() => true, () => false));
      if (!copied) await fetch(d, tmp);
      await fs.chmod(tmp, modeOf(executable));
      await fs.rename(tmp, file);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    }
    this.add(name, d.size);
  }

  private add(name: string, size: number) {
    this.remove(name);
    this.entries.set(name, size);
    this.total += size;
  }

  private remove(name: string) {
    const size = this.entries.get(name);
    if (size === undefined) return;
    this.entries.delete(name);
    this.total -= size;
  }

  private touch(name: string) {
    const size = this.entries.get(name)!;
    this.entries.delete(name);
    this.entries.set(name, size);
  }

  private pin(name: string) {
    this.pins.set(name, (this.pins.get(name) ?? 0) + 1);
  }

  private unpin(name: string) {
    const n = (this.pins.get(name) ?? 1) - 1;
    if (n > 0) this.pins.set(name, n);
    else this.pins.delete(name);
  }

  private async evict(): Promise<void> {
    if (this.total <= this.maxBytes) return;
    const victims: string[] = [];
    for (const [name, size] of this.entries) {
      if (this.total <= this.maxBytes) break;
      if (this.pins.has(name) || this.pending.has(name)) continue;
      victims.push(name);
      this.entries.delete(name);
      this.total -= size;
    }
    await Promise.all(victims.map((name) => fs.rm(path.join(this.blobs, name), { force: true })));
  }
}
