// A single-range `Range: bytes=...` header, as Bazel and curl send it.
import { Code, ConnectError } from "../errors.ts";

export interface ParsedRange {
  offset: number;
  length?: number;
}

/** undefined: no Range header (whole body). Throws OUT_OF_RANGE (416) for unsatisfiable ranges. */
export function parseRange(header: string | null, size: number): ParsedRange | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined; // multi-range or malformed: serve it whole
  let start: number, end: number;
  if (m[1] === "") {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || end < start) throw new ConnectError(`range ${header} is not within ${size} bytes`, Code.OutOfRange);
  return { offset: start, length: end - start + 1 };
}
