// An input root (or a Tree's root) as an expandable tree: directories load when opened, from the
// CAS (or from a Tree message's children), so a 100,000-file input costs only what is looked at.
import { useState } from "preact/hooks";
import { DirectorySchema, type Directory, type Digest } from "../../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { blobUrl, readMessage } from "../blobs.ts";
import { bytes } from "../format.ts";
import { digestPath, Link } from "../router.tsx";
import { Download, ErrorBox } from "./common.tsx";

/** Where a child Directory comes from: the CAS by digest, or a Tree's children by digest hash. */
export type DirectoryLoader = (d: Digest) => Promise<Directory>;

export const casLoader =
  (instance: string): DirectoryLoader =>
  (d) =>
    readMessage(DirectorySchema, instance, d);

export function DirectoryView({ instance, dir, load, path = "", label = "input tree" }: { instance: string; dir: Directory; load: DirectoryLoader; path?: string; label?: string }) {
  return (
    // Plain nested lists with disclosure buttons (not an ARIA tree, which promises arrow-key moves).
    <ul class={path ? "tree" : "tree tree-root"} aria-label={path ? undefined : label}>
      {dir.directories.map((d) => (
        <DirectoryItem key={d.name} instance={instance} name={d.name} digest={d.digest!} load={load} path={`${path}${d.name}/`} />
      ))}
      {dir.files.map((f) => (
        <li key={f.name} class="file">
          <Link href={`${digestPath("cas", instance, f.digest!)}?as=raw`}>{f.name}</Link>
          {f.isExecutable && <span class="muted"> (executable)</span>}
          <span class="muted"> {bytes(f.digest?.sizeBytes ?? 0n)}</span>{" "}
          <Download href={blobUrl(instance, f.digest!)} name={f.name}>
            download
          </Download>
        </li>
      ))}
      {dir.symlinks.map((s) => (
        <li key={s.name} class="symlink">
          {s.name} → <code>{s.target}</code>
        </li>
      ))}
      {dir.directories.length + dir.files.length + dir.symlinks.length === 0 && <li class="muted">(empty)</li>}
    </ul>
  );
}

function DirectoryItem({ instance, name, digest, load, path }: { instance: string; name: string; digest: Digest; load: DirectoryLoader; path: string }) {
  const [open, setOpen] = useState(false);
  const [dir, setDir] = useState<Directory>();
  const [error, setError] = useState<unknown>();
  const toggle = async () => {
    setOpen(!open);
    if (dir || open) return;
    try {
      setDir(await load(digest));
    } catch (e) {
      setError(e);
    }
  };
  return (
    <li class="dir">
      <button class="twisty" aria-expanded={open} onClick={toggle}>
        {open ? "▾" : "▸"} {name}/
      </button>{" "}
      <Link class="muted" href={`${digestPath("cas", instance, digest)}?as=directory`}>
        {digest.hash.slice(0, 12)}…/{String(digest.sizeBytes)}
      </Link>
      {open && (error !== undefined ? <ErrorBox error={error} /> : dir ? <DirectoryView instance={instance} dir={dir} load={load} path={path} /> : <p class="loading">Loading…</p>)}
    </li>
  );
}
