// TraverseFileSets: the FileSets reachable from a start through their `file_sets` references,
// breadth first, each once (references may form cycles), and its pages. The closure is recomputed
// per page and sliced by position, which is stable for a given state of the invocation.
import { fromBinary } from "@bufbuild/protobuf";
import { FileSetSchema, type FileSet } from "../gen/google/devtools/resultstore/v2/file_set_pb.ts";
import { canonicalName } from "./names.ts";
import { PAGE_BYTES, type ReadRow } from "./read-store.ts";

/** File sets per Durable Object read: each may be ~2 MB, and a DO RPC answer at most 32 MiB. */
const GET_CHUNK = 8;

export interface SizedFileSet {
  set: FileSet;
  /** Its stored size: pages end at PAGE_BYTES. */
  bytes: number;
}

/**
 * FileSets reachable from `start` (names, in any spelling), with their sizes; names that are not
 * file set names, or name none that exists, are skipped. `get` reads stored rows by canonical name.
 */
export async function fileSetClosure(get: (names: string[]) => Promise<ReadRow[]>, start: string[]): Promise<SizedFileSet[]> {
  const seen = new Set<string>();
  const out: SizedFileSet[] = [];
  let frontier = start;
  while (frontier.length) {
    const names = [...new Set(frontier.map(fileSetName).filter((n): n is string => !!n))].filter((n) => !seen.has(n));
    names.forEach((n) => seen.add(n));
    if (!names.length) break;
    const found: FileSet[] = [];
    for (let i = 0; i < names.length; i += GET_CHUNK) {
      for (const row of await get(names.slice(i, i + GET_CHUNK))) {
        const set = fromBinary(FileSetSchema, row.data);
        found.push(set);
        out.push({ set, bytes: row.data.byteLength });
      }
    }
    frontier = found.flatMap((s) => s.fileSets);
  }
  return out;
}

function fileSetName(name: string): string | null {
  try {
    return canonicalName(name, "fileSet");
  } catch {
    return null;
  }
}

/** The page at `offset`: up to `limit` sets, ending early past PAGE_BYTES (but never empty), as the DO's list pages do. */
export function fileSetPage(all: SizedFileSet[], offset: number, limit: number): { page: FileSet[]; more: boolean } {
  const page: FileSet[] = [];
  let bytes = 0;
  for (const { set, bytes: n } of all.slice(offset, offset + limit)) {
    bytes += n;
    if (page.length > 0 && bytes > PAGE_BYTES) break;
    page.push(set);
  }
  return { page, more: offset + page.length < all.length };
}
