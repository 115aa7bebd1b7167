// Any CAS digest opened as a Directory, Tree, Action, Command or raw bytes (text or hex).
import { toBinary } from "@bufbuild/protobuf";
import { DirectorySchema, TreeSchema, type Digest, type Directory } from "../../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { blobUrl, readBytes, readMessage, resourceName } from "../blobs.ts";
import { Download, Show, useLoad } from "../components/common.tsx";
import { casLoader, DirectoryView, type DirectoryLoader } from "../components/tree.tsx";
import { bytes } from "../format.ts";
import { digestPath, Link, navigate } from "../router.tsx";
import { ActionPage, CommandView } from "./action.tsx";

const VIEWS = ["directory", "tree", "action", "command", "raw"] as const;
type View = (typeof VIEWS)[number];
const RAW_LIMIT = 64n * 1024n;

export function CasPage({ target, url }: { target: { instance: string; digest: Digest } | null; url: URL }) {
  const as = (VIEWS as readonly string[]).includes(url.searchParams.get("as") ?? "") ? (url.searchParams.get("as") as View) : "raw";
  const open = (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const hash = String(f.get("hash") ?? "").trim().toLowerCase();
    const size = String(f.get("size") ?? "").trim();
    navigate(`${digestPath("cas", String(f.get("instance") ?? "").trim(), { hash, sizeBytes: BigInt(/^[0-9]+$/.test(size) ? size : "0") })}?as=${f.get("as")}`);
  };
  return (
    <section>
      <h1>CAS</h1>
      <form class="search" onSubmit={open} aria-label="open a digest">
        <label>
          Instance <input name="instance" defaultValue={target?.instance ?? ""} placeholder="(empty)" />
        </label>
        <label class="wide">
          Hash <input name="hash" required pattern="[0-9a-fA-F]{64}" defaultValue={target?.digest.hash ?? ""} placeholder="sha256 hex" />
        </label>
        <label>
          Size <input name="size" required pattern="[0-9]+" inputMode="numeric" defaultValue={target ? String(target.digest.sizeBytes) : ""} />
        </label>
        <label>
          As{" "}
          <select name="as" aria-label="View as" defaultValue={as}>
            {VIEWS.map((v) => (
              <option key={v} value={v}>
                {v}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Open</button>
      </form>
      {target && (
        <>
          <nav class="tabs" aria-label="view as">
            {VIEWS.map((v) => (
              <Link key={v} href={`${digestPath("cas", target.instance, target.digest)}?as=${v}`} aria-current={v === as ? "page" : undefined}>
                {v}
              </Link>
            ))}
            <Download href={blobUrl(target.instance, target.digest)} name={target.digest.hash}>
              download ({bytes(target.digest.sizeBytes)})
            </Download>
          </nav>
          <CasView key={`${target.digest.hash}/${as}`} instance={target.instance} digest={target.digest} as={as} />
        </>
      )}
    </section>
  );
}

function CasView({ instance, digest, as }: { instance: string; digest: Digest; as: View }) {
  switch (as) {
    case "directory":
      return <DirectoryBlob instance={instance} digest={digest} />;
    case "tree":
      return <TreeBlob instance={instance} digest={digest} />;
    case "action":
      return <ActionPage instance={instance} digest={digest} />;
    case "command":
      return <CommandView instance={instance} digest={digest} />;
    case "raw":
      return <RawBlob instance={instance} digest={digest} />;
  }
}

function DirectoryBlob({ instance, digest }: { instance: string; digest: Digest }) {
  const dir = useLoad(() => readMessage(DirectorySchema, instance, digest), [digest.hash]);
  return <Show loaded={dir}>{(d) => <DirectoryView instance={instance} dir={d} load={casLoader(instance)} label="directory" />}</Show>;
}

/** A Tree's children are found by the hash of their encoding; any not in it are read from the CAS. */
function TreeBlob({ instance, digest }: { instance: string; digest: Digest }) {
  const tree = useLoad(async () => {
    const t = await readMessage(TreeSchema, instance, digest);
    const byHash = new Map<string, Directory>();
    for (const child of t.children) byHash.set(await sha256Hex(toBinary(DirectorySchema, child)), child);
    const fromCas = casLoader(instance);
    const load: DirectoryLoader = async (d) => byHash.get(d.hash) ?? fromCas(d);
    return { root: t.root, children: t.children.length, load };
  }, [digest.hash]);
  return (
    <Show loaded={tree}>
      {(t) => (
        <>
          <p class="muted">{t.children} child directories</p>
          {t.root ? <DirectoryView instance={instance} dir={t.root} load={t.load} label="tree" /> : <p>This Tree has no root.</p>}
        </>
      )}
    </Show>
  );
}

async function sha256Hex(b: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(b)));
  return Array.from(h, (x) => x.toString(16).padStart(2, "0")).join("");
}

function RawBlob({ instance, digest }: { instance: string; digest: Digest }) {
  const data = useLoad((signal) => readBytes(resourceName(instance, digest), 0n, RAW_LIMIT, signal), [digest.hash]);
  return (
    <Show loaded={data}>
      {(b) => (
        <>
          {digest.sizeBytes > RAW_LIMIT && <p class="muted">The first {bytes(RAW_LIMIT)} of {bytes(digest.sizeBytes)}; download for the rest.</p>}
          <RawBytes data={b} />
        </>
      )}
    </Show>
  );
}

function RawBytes({ data }: { data: Uint8Array }) {
  // Text when it decodes as UTF-8 without control characters (a protobuf often decodes, but has them).
  let text: string | null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(data);
    if (/[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]/.test(text)) text = null;
  } catch {
    text = null;
  }
  return (
    <>
      {text !== null && (
        <>
          <h2>Text</h2>
          <pre class="raw" aria-label="text">
            {text}
          </pre>
        </>
      )}
      <details open={text === null}>
        <summary>Hex</summary>
        <pre class="hex" aria-label="hex">
          {hexDump(data)}
        </pre>
      </details>
    </>
  );
}

/** xxd-style: offset, 16 bytes in hex, the printable ones as text. */
function hexDump(b: Uint8Array): string {
  const lines: string[] = [];
  for (let i = 0; i < b.length; i += 16) {
    const row = b.subarray(i, i + 16);
    const hex = Array.from(row, (x) => x.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (x) => (x >= 0x20 && x < 0x7f ? String.fromCharCode(x) : ".")).join("");
    lines.push(`${i.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}
