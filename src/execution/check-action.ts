// What Execute checks before an operation exists: the Action and Command parse, the Command's
// paths, environment and arguments are usable (shared/command-plan.ts), the timeout is within
// bounds, every input Directory can be laid out (shared/input-directory.ts), and every blob the
// action needs is in the CAS (else one MISSING violation each).
import {
  ActionSchema,
  CommandSchema,
  type Action,
  type Command,
} from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { defaultActionTimeoutMs, maxActionTimeoutMs } from "../config.ts";
import { invalidArgument, missingBlobs } from "../errors.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import { blobKey, missingSubject, parseDigest, type BlobDigest } from "../storage/digest.ts";
import { readDirectories, readMessage } from "../storage/merkle.ts";
import { checkOutputNodeProperties } from "../services/node-properties.ts";
import { planCommand } from "../shared/command-plan.ts";
import { checkInputDirectory } from "../shared/input-directory.ts";
import { effectivePlatform } from "../shared/platform.ts";

export interface CheckedAction {
  action: Action;
  command: Command;
  timeoutMs: number;
  /** Sorted (name, value) pairs: Action.platform, else the deprecated Command.platform (shared/platform.ts). */
  platform: [string, string][];
}

/**
 * Every Directory and file of the input tree that is not in the CAS. `read`: blobs read without a
 * touch (the Action, the Command), touched in the same lookup as the files and the Directories.
 */
async function missingInputs(store: BlobStore, root: BlobDigest, read: BlobDigest[]): Promise<BlobDigest[]> {
  const missing: BlobDigest[] = [];
  const files: BlobDigest[] = [];
  const dirsRead: BlobDigest[] = [];
  const seen = new Set<string>([blobKey(root)]);
  let level = [root];
  while (level.length > 0) {
    const { dirs } = await readDirectories(store, level);
    const next: BlobDigest[] = [];
    dirs.forEach((dir, i) => {
      if (!dir) return void missing.push(level[i]!);
      dirsRead.push(level[i]!);
      checkInputDirectory(dir, blobKey(level[i]!));
      for (const f of dir.files) files.push(parseDigest(f.digest, `input file ${f.name}`));
      for (const c of dir.directories) {
        const d = parseDigest(c.digest, `input directory ${c.name}`);
        if (!seen.has(blobKey(d))) (seen.add(blobKey(d)), next.push(d));
      }
    });
    level = next;
  }
  // Everything the action needs is touched, so that it all outlives the minimum lifetime from now,
  // not only its files; the lookup only tells missing files (the others' reads already told).
  const touched = [...read, ...dirsRead];
  const absent = await store.index.missingAt([...touched, ...files], true);
  return [...missing, ...absent.filter((i) => i >= touched.length).map((i) => files[i - touched.length]!)];
}

export async function checkAction(store: BlobStore, actionDigest: BlobDigest): Promise<CheckedAction> {
  const action = await readMessage(store, actionDigest, ActionSchema);
  if (!action) throw missingBlobs("the Action is not in the CAS", [missingSubject(actionDigest)]);
  const commandDigest = parseDigest(action.commandDigest, "action.command_digest");
  const inputRoot = parseDigest(action.inputRootDigest, "action.input_root_digest");
  const [command, missing] = await Promise.all([
    readMessage(store, commandDigest, CommandSchema),
    missingInputs(store, inputRoot, [actionDigest, commandDigest]),
  ]);
  if (!command) missing.unshift(commandDigest);
  if (missing.length > 0) {
    throw missingBlobs(`${missing.length} blob(s) the action needs are not in the CAS`, missing.map(missingSubject));
  }
  if (command!.arguments.length === 0) throw invalidArgument("the Command has no arguments", "command.arguments");
  // What the runner would refuse after a wait in the queue (bad paths, environment, arguments) is
  // refused now, as REAPI asks of errors found while creating the operation.
  planCommand(command!);
  checkOutputNodeProperties(command!);

  let timeoutMs = defaultActionTimeoutMs();
  if (action.timeout) {
    timeoutMs = Number(action.timeout.seconds) * 1000 + Math.floor(action.timeout.nanos / 1e6);
    if (timeoutMs <= 0) throw invalidArgument("action.timeout must be positive", "action.timeout");
    if (timeoutMs > maxActionTimeoutMs()) {
      throw invalidArgument(`action.timeout ${timeoutMs / 1000} s is over this server's maximum of ${maxActionTimeoutMs() / 1000} s`, "action.timeout");
    }
  }
  return { action, command: command!, timeoutMs, platform: effectivePlatform(action, command!) };
}
