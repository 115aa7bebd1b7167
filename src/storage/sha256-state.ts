// SHA-256 whose running state can be saved between requests, so a resumed ByteStream upload
// still verifies the whole blob. Web Crypto cannot export a digest's state; @noble/hashes keeps
// its eight state words behind get()/set() (not public API, stable across v1 and v2), and the
// tests check a save/restore round trip against crypto.subtle so an upgrade cannot break it silently.
import { sha256 } from "@noble/hashes/sha2.js";

type Hasher = ReturnType<typeof sha256.create>;
interface Internals {
  get(): number[];
  set(...words: number[]): void;
  length: number;
  pos: number;
  buffer: Uint8Array;
}

export interface SavedSha256 {
  words: number[];
  length: number;
  tail: number[];
}

export const newSha256 = (): Hasher => sha256.create();

export function saveSha256(h: Hasher): string {
  const i = h as unknown as Internals;
  const saved: SavedSha256 = { words: i.get(), length: i.length, tail: Array.from(i.buffer.subarray(0, i.pos)) };
  return JSON.stringify(saved);
}

export function restoreSha256(state: string): Hasher {
  const saved = JSON.parse(state) as SavedSha256;
  const h = sha256.create();
  const i = h as unknown as Internals;
  i.set(...saved.words);
  i.length = saved.length - saved.tail.length;
  i.pos = 0;
  if (saved.tail.length) h.update(Uint8Array.from(saved.tail));
  return h;
}

export const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
