// zstd compression inside workerd: the reference C library (@bokuweb/zstd-wasm's build) run as
// WebAssembly. That build has no streaming API, so a stream is compressed as a sequence of
// independent frames of at most FRAME_BYTES each: concatenated frames are one valid zstd stream
// (RFC 8878 §3.1), and memory stays at one frame in and one out, whatever the blob's size.
// The package's JS loader fetches its .wasm by URL; here the module is imported statically and
// handed to the loader's instantiateWasm hook instead.
import zstdWasm from "../../../node_modules/@bokuweb/zstd-wasm/dist/esm/zstd.wasm";
import { Module, waitInitialized } from "../../../node_modules/@bokuweb/zstd-wasm/dist/esm/module.js";

/** Uncompressed bytes per frame: one ReadResponse's worth, so each message is one frame. */
export const FRAME_BYTES = 1024 * 1024;

/** Level 1: the fastest of the regular levels; REAPI lets a server choose any level. */
const LEVEL = 1;

interface ZstdModule {
  HEAPU8: Uint8Array;
  instantiateWasm?: (imports: WebAssembly.Imports, receive: (i: WebAssembly.Instance) => void) => WebAssembly.Exports;
  init(): void;
  _malloc(n: number): number;
  _ZSTD_compressBound(n: number): number;
  _ZSTD_compress(dst: number, cap: number, src: number, n: number, level: number): number;
  _ZSTD_isError(code: number): number;
}

interface Encoder {
  mod: ZstdModule;
  src: number;
  dst: number;
  cap: number;
}

let ready: Promise<Encoder> | undefined;

function encoder(): Promise<Encoder> {
  return (ready ??= (async () => {
    const mod = Module as unknown as ZstdModule;
    mod.instantiateWasm = (imports, receive) => {
      const instance = new WebAssembly.Instance(zstdWasm, imports);
      receive(instance);
      return instance.exports;
    };
    mod.init();
    await waitInitialized();
    // One input and one output buffer for the isolate: compressing a frame is synchronous, so
    // concurrent requests never interleave inside it.
    const cap = mod._ZSTD_compressBound(FRAME_BYTES);
    return { mod, src: mod._malloc(FRAME_BYTES), dst: mod._malloc(cap), cap };
  })());
}

function compressFrame(e: Encoder, bytes: Uint8Array): Uint8Array {
  e.mod.HEAPU8.set(bytes, e.src);
  const n = e.mod._ZSTD_compress(e.dst, e.cap, e.src, bytes.byteLength, LEVEL);
  if (e.mod._ZSTD_isError(n)) throw new Error("zstd compression failed");
  // HEAPU8 is re-read after the call: the heap may have grown (and been replaced) inside it.
  return e.mod.HEAPU8.slice(e.dst, e.dst + n);
}

/** Compresses a byte stream into zstd frames, one per FRAME_BYTES of input (the last may be shorter). */
export async function* zstdFrames(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const e = await encoder();
  const pending = new Uint8Array(FRAME_BYTES);
  let filled = 0;
  let any = false;
  for await (let chunk of source) {
    while (chunk.byteLength > 0) {
      const take = Math.min(chunk.byteLength, FRAME_BYTES - filled);
      pending.set(chunk.subarray(0, take), filled);
      filled += take;
      chunk = chunk.subarray(take);
      if (filled === FRAME_BYTES) {
        yield compressFrame(e, pending);
        filled = 0;
        any = true;
      }
    }
  }
  // An empty blob is still one (empty) frame, so the client has a zstd stream to decode.
  if (filled > 0 || !any) yield compressFrame(e, pending.subarray(0, filled));
}

/** Compresses bytes already in memory (batch responses). */
export async function zstdCompress(bytes: Uint8Array): Promise<Uint8Array> {
  const frames: Uint8Array[] = [];
  for await (const f of zstdFrames([bytes])) frames.push(f);
  return frames.length === 1 ? frames[0]! : new Uint8Array(await new Blob(frames).arrayBuffer());
}
