// Large values kept in Durable Object storage in parts. A SQLite-backed object refuses a row, or a
// key-value entry, over 2 MB (local workerd does not, so only a deployed Kiln would fail); an
// ExecuteResponse may be up to 16 MiB (an ActionResult naming ~15,000 output files passes 2 MB).

/** Bytes per stored part: well under the 2 MB row limit, with room for the row's other columns. */
export const PART_BYTES = 1024 * 1024;

/** `bytes` cut into parts of at most PART_BYTES (one empty part for no bytes). */
export function partsOf(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.byteLength || out.length === 0; at += PART_BYTES) out.push(bytes.slice(at, at + PART_BYTES));
  return out;
}
