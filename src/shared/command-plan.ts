// What a Command asks for, checked: the argument vector, the environment, the working directory
// and the outputs, in either REAPI style (output_paths since v2.1, or the older output_files and
// output_directories, which Bazel 4.x still sends). The worker checks it at Execute (a bad Command
// is INVALID_ARGUMENT before anything is queued); the runner plans the run by it.
import { Command_OutputDirectoryFormat, type Command } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "./status.ts";

export interface CommandPlan {
  argv: string[];
  env: Record<string, string>;
  /** Relative to the input root, `/`-separated; "" is the input root. */
  workingDirectory: string;
  outputs:
    | { style: "paths"; paths: string[] }
    | { style: "files"; files: string[]; directories: string[] };
  /** Also store each output Directory and set root_directory_digest (DIRECTORY_ONLY, TREE_AND_DIRECTORY). */
  directoryBlobs: boolean;
  /** Which NodeProperties output_node_properties asks for (the worker refuses any others). */
  nodeProperties: NodePropertyNames;
}

export interface NodePropertyNames {
  unixMode: boolean;
  mtime: boolean;
}

/** A relative `/`-separated path with no empty, `.` or `..` segment; "" only where allowed. */
export function checkRelativePath(p: string, what: string, allowEmpty: boolean): string {
  if (p === "") {
    if (allowEmpty) return p;
    throw invalidArgument(`${what} is empty`);
  }
  if (p.includes("\0")) throw invalidArgument(`${what} ${JSON.stringify(p)} contains a NUL byte`);
  if (p.startsWith("/") || p.endsWith("/")) throw invalidArgument(`${what} ${JSON.stringify(p)} must be relative, with no leading or trailing slash`);
  for (const seg of p.split("/")) {
    if (seg === "" || seg === "." || seg === "..") throw invalidArgument(`${what} ${JSON.stringify(p)} has an empty, "." or ".." segment`);
  }
  return p;
}

export function planCommand(command: Command): CommandPlan {
  if (command.arguments.length === 0 || command.arguments[0] === "") throw invalidArgument("the Command has no arguments");
  const env: Record<string, string> = {};
  for (const v of command.environmentVariables) {
    if (!v.name || v.name.includes("=") || v.name.includes("\0") || v.value.includes("\0")) {
      throw invalidArgument(`environment variable ${JSON.stringify(v.name)} is not a valid name=value`);
    }
    env[v.name] = v.value;
  }
  const workingDirectory = checkRelativePath(command.workingDirectory, "working_directory", true);
  let outputs: CommandPlan["outputs"];
  if (command.outputPaths.length > 0) {
    outputs = { style: "paths", paths: command.outputPaths.map((p) => checkRelativePath(p, "output path", true)) };
  } else {
    const files = command.outputFiles.map((p) => checkRelativePath(p, "output file", false));
    const directories = command.outputDirectories.map((p) => checkRelativePath(p, "output directory", true));
    const dirSet = new Set(directories);
    for (const f of files) {
      if (dirSet.has(f)) throw invalidArgument(`${JSON.stringify(f)} is both an output file and an output directory`);
    }
    outputs = { style: "files", files, directories };
  }
  const directoryBlobs =
    command.outputDirectoryFormat === Command_OutputDirectoryFormat.DIRECTORY_ONLY ||
    command.outputDirectoryFormat === Command_OutputDirectoryFormat.TREE_AND_DIRECTORY;
  const nodeProperties = {
    unixMode: command.outputNodeProperties.includes("unix_mode"),
    mtime: command.outputNodeProperties.includes("mtime"),
  };
  return { argv: [...command.arguments], env, workingDirectory, outputs, directoryBlobs, nodeProperties };
}
