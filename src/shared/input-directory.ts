// What an input Directory must be to be laid out on disk: entries with plain names (no "/", ".",
// ".." or NUL), each name once across files, directories and symlinks, and symlinks with a
// target. The worker checks every Directory of an input tree at Execute; the runner again before
// it stages one.
import type { Directory } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "./status.ts";

function checkName(name: string, where: string) {
  if (!name || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw invalidArgument(`input directory ${where} has an entry named ${JSON.stringify(name)}`);
  }
}

/** INVALID_ARGUMENT naming `where` (the Directory's digest) when `dir` cannot be an input directory. */
export function checkInputDirectory(dir: Directory, where: string): void {
  const names = new Set<string>();
  for (const n of [...dir.files, ...dir.directories, ...dir.symlinks]) {
    checkName(n.name, where);
    if (names.has(n.name)) throw invalidArgument(`input directory ${where} has two entries named ${JSON.stringify(n.name)}`);
    names.add(n.name);
  }
  for (const s of dir.symlinks) {
    if (!s.target || s.target.includes("\0")) throw invalidArgument(`input symlink ${s.name} in ${where} has an invalid target`);
  }
}
