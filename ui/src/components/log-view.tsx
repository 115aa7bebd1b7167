// A log rendered like a terminal (ANSI SGR colours via anser), tailed: the last chunk first, and
// earlier chunks on request, so a 1 GiB log costs one chunk until someone asks for more.
import Anser from "anser";
import { useEffect, useState } from "preact/hooks";
import { ErrorBox } from "./common.tsx";
import { bytes } from "../format.ts";

const CHUNK = 64n * 1024n;

export interface LogSource {
  /** Identity: a new key starts over. */
  key: string;
  /** Total bytes, when known. */
  size?: bigint;
  /** Bytes [offset, offset+limit). */
  read(offset: bigint, limit: bigint, signal: AbortSignal): Promise<Uint8Array>;
  /** The last `limit` bytes, when the source can find its own end (ResultStore's GetFileTail). */
  tail?(limit: bigint, signal: AbortSignal): Promise<Uint8Array>;
}

interface Loaded {
  /** Offset of the first byte shown (-1: unknown, the source's size is not known). */
  start: bigint;
  text: string;
}

export function LogView({ source, label }: { source: LogSource; label: string }) {
  const [state, setState] = useState<Loaded | null>(null);
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const ac = new AbortController();
    setState(null);
    setError(undefined);
    (async () => {
      let data: Uint8Array;
      let start: bigint;
      if (source.tail) {
        data = await source.tail(CHUNK, ac.signal);
        start = source.size !== undefined ? source.size - BigInt(data.length) : -1n;
      } else if (source.size !== undefined) {
        start = source.size > CHUNK ? source.size - CHUNK : 0n;
        data = await source.read(start, source.size - start, ac.signal);
      } else {
        data = await source.read(0n, CHUNK, ac.signal);
        start = 0n;
      }
      if (!ac.signal.aborted) setState({ start, text: decode(data) });
    })().catch((e) => !ac.signal.aborted && setError(e));
    return () => ac.abort();
  }, [source.key]);

  const earlier = async () => {
    if (!state || state.start <= 0n) return;
    setBusy(true);
    try {
      const from = state.start > CHUNK ? state.start - CHUNK : 0n;
      const data = await source.read(from, state.start - from, new AbortController().signal);
      setState({ start: from, text: decode(data) + state.text });
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  if (error !== undefined) return <ErrorBox error={error} />;
  if (!state) return <p class="loading">Loading {label}…</p>;
  return (
    <div class="log" aria-label={label}>
      {state.start > 0n && (
        <div class="log-more">
          {bytes(state.start)} before this are not shown.{" "}
          <button disabled={busy} onClick={earlier}>
            Show {bytes(state.start > CHUNK ? CHUNK : state.start)} more
          </button>
        </div>
      )}
      {state.text === "" ? <p class="muted">(empty)</p> : <AnsiText text={state.text} />}
    </div>
  );
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** anser's xterm colours, made readable on the log's dark background (GitHub's dark palette). */
const PALETTE: Record<string, string> = {
  "0, 0, 0": "110, 118, 129",
  "187, 0, 0": "255, 123, 114",
  "0, 187, 0": "63, 185, 80",
  "187, 187, 0": "210, 153, 34",
  "0, 0, 187": "88, 166, 255",
  "187, 0, 187": "188, 140, 255",
  "0, 187, 187": "57, 197, 207",
  "85, 85, 85": "139, 148, 158",
  "85, 85, 255": "121, 192, 255",
};
const colour = (c: string) => `rgb(${PALETTE[c] ?? c})`;

/** Text with ANSI colour codes as styled spans (never as HTML: the text stays text). */
export function AnsiText({ text }: { text: string }) {
  const parts = Anser.ansiToJson(text, { remove_empty: true });
  return (
    <pre class="ansi">
      {parts.map((p, i) => {
        const style: Record<string, string> = {};
        if (p.fg) style.color = colour(p.fg);
        if (p.bg) style.backgroundColor = colour(p.bg);
        const cls = p.decorations.map((d) => `ansi-${d}`).join(" ");
        return cls || p.fg || p.bg ? (
          <span key={i} class={cls || undefined} style={style}>
            {p.content}
          </span>
        ) : (
          p.content
        );
      })}
    </pre>
  );
}
