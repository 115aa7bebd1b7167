// One action from start to finish: fetch the Action, Command and input tree, stage the inputs,
// run the command, upload stdout, stderr and the outputs, and assemble the ActionResult with its
// ExecutedActionMetadata. Refusals (bad action, missing blobs) are thrown as RunnerErrors.
import { create, fromBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, TimestampSchema, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  ActionResultSchema,
  ActionSchema,
  CommandSchema,
  ExecutedActionMetadataSchema,
  type ActionResult,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { BlobNotFoundError, CasClient, type BlobSource, type CasTarget } from "./cas-client.ts";
import { collectOutputs, type CollectedOutputs } from "./collect-outputs.ts";
import { planCommand, type CommandPlan } from "./command.ts";
import { blobKey, digestOfFile, missingSubject, parseDigest, toProtoDigest, type BlobDigest } from "./digest.ts";
import { invalidArgument, RunnerError } from "./errors.ts";
import type { FileCache } from "./file-cache.ts";
import { Limiter } from "./limit.ts";
import { runCommand } from "./run-command.ts";
import { fetchInputTree, prepareWorkingDirectory, stageInputs } from "./stage-inputs.ts";
import { createWorkspace, removeWorkspace, type Workspace } from "./workspace.ts";

export interface ActionRequest {
  cas: CasTarget;
  actionDigest: BlobDigest;
  timeoutMs: number;
  /** When the operation was queued (epoch ms), if the scheduler says; else when the runner got it. */
  queuedAtMs?: number;
}

export interface RunnerContext {
  /** ExecutedActionMetadata.worker: `{hostname}/{runner id}`. */
  worker: string;
  workDir: string;
  killGraceMs: number;
  cache: FileCache;
  /** CAS requests in flight, across all actions. */
  transfers: Limiter;
  /** Work directories are removed in the background; the server waits for them on close. */
  background: (p: Promise<unknown>) => void;
}

export type ActionStatus = "OK" | "DEADLINE_EXCEEDED" | "CANCELLED" | "FAILED_PRECONDITION";

export interface ActionOutcome {
  result: ActionResult;
  status: ActionStatus;
  message?: string;
}

/** Files hashed at once per action when collecting outputs. */
const HASH_CONCURRENCY = 8;

/** Wall-clock time with sub-millisecond precision, so that close stages keep their order. */
function now(): Timestamp {
  const ms = performance.timeOrigin + performance.now();
  return create(TimestampSchema, { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.floor((ms % 1000) * 1e6) });
}

async function readMessage<D extends DescMessage>(cas: CasClient, schema: D, d: BlobDigest, signal: AbortSignal): Promise<MessageShape<D>> {
  let bytes: Uint8Array;
  try {
    bytes = await cas.readBytes(d, signal);
  } catch (e) {
    if (e instanceof BlobNotFoundError) {
      throw new RunnerError("FAILED_PRECONDITION", `the ${schema.name} ${blobKey(d)} is not in the CAS`, [missingSubject(d)]);
    }
    throw e;
  }
  try {
    return fromBinary(schema, bytes);
  } catch {
    throw invalidArgument(`blob ${blobKey(d)} is not a ${schema.typeName} message`);
  }
}

/** Both results, or one error: missing blobs of both merged, so the client can upload them at once. */
async function both<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === "fulfilled" && rb.status === "fulfilled") return [ra.value, rb.value];
  const errors = [ra, rb].filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason);
  const isMissing = (e: unknown): e is RunnerError => e instanceof RunnerError && e.missing !== undefined;
  const other = errors.find((e) => !isMissing(e));
  if (other !== undefined || errors.length === 1) throw other ?? errors[0];
  const missing = errors.flatMap((e) => (e as RunnerError).missing!);
  throw new RunnerError("FAILED_PRECONDITION", `${missing.length} blob(s) the action needs are not in the CAS`, missing);
}

export async function executeAction(ctx: RunnerContext, req: ActionRequest, signal: AbortSignal): Promise<ActionOutcome> {
  const started = now();
  const metadata = create(ExecutedActionMetadataSchema, {
    worker: ctx.worker,
    queuedTimestamp: req.queuedAtMs ? timestampFromMs(req.queuedAtMs) : started,
    workerStartTimestamp: started,
  });
  const cas = new CasClient(req.cas, ctx.transfers);
  const ws: Workspace = await createWorkspace(ctx.workDir);
  const finish = (fields: MessageInitShape<typeof ActionResultSchema>, status: ActionStatus, message?: string): ActionOutcome => {
    metadata.workerCompletedTimestamp = now();
    return { result: create(ActionResultSchema, { ...fields, executionMetadata: metadata }), status, message };
  };
  try {
    // Inputs.
    metadata.inputFetchStartTimestamp = now();
    let staged: { plan: CommandPlan; cwd: string };
    try {
      const action = await readMessage(cas, ActionSchema, req.actionDigest, signal);
      const commandDigest = parseDigest(action.commandDigest, "action.command_digest");
      const inputRoot = parseDigest(action.inputRootDigest, "action.input_root_digest");
      const [command, tree] = await both(readMessage(cas, CommandSchema, commandDigest, signal), fetchInputTree(cas, inputRoot, signal));
      const plan = planCommand(command);
      await stageInputs(tree, inputRoot, ws.inputRoot, cas, ctx.cache, signal);
      staged = { plan, cwd: await prepareWorkingDirectory(ws.inputRoot, plan) };
    } catch (e) {
      if (signal.aborted) return finish({}, "CANCELLED", "cancelled while fetching inputs");
      throw e;
    }
    metadata.inputFetchCompletedTimestamp = now();

    // Execution.
    metadata.executionStartTimestamp = now();
    const run = await runCommand({
      argv: staged.plan.argv,
      env: staged.plan.env,
      cwd: staged.cwd,
      stdoutPath: ws.stdoutPath,
      stderrPath: ws.stderrPath,
      timeoutMs: req.timeoutMs,
      killGraceMs: ctx.killGraceMs,
      signal,
    });
    metadata.executionCompletedTimestamp = now();
    metadata.virtualExecutionDuration = durationFromMs(Math.round(run.completedAt - run.startedAt));

    // Outputs: none from an action that did not finish, but its stdout and stderr so far.
    metadata.outputUploadStartTimestamp = now();
    const blobs: BlobSource[] = [];
    const log = async (p: string) => {
      const digest = await digestOfFile(p);
      if (digest.size === 0) return undefined;
      blobs.push({ digest, path: p });
      return toProtoDigest(digest);
    };
    const [stdoutDigest, stderrDigest] = await Promise.all([log(ws.stdoutPath), log(ws.stderrPath)]);
    let outputs: CollectedOutputs | undefined;
    if (!run.timedOut && !run.cancelled) {
      outputs = await collectOutputs(staged.cwd, staged.plan, new Limiter(HASH_CONCURRENCY));
      blobs.push(...outputs.blobs);
    }
    await cas.uploadMissing(blobs);
    metadata.outputUploadCompletedTimestamp = now();

    const fields = { ...outputs?.fields, exitCode: run.exitCode, stdoutDigest, stderrDigest };
    if (run.cancelled || signal.aborted) return finish(fields, "CANCELLED", "the action was cancelled");
    if (run.timedOut) return finish(fields, "DEADLINE_EXCEEDED", `the action exceeded its timeout of ${req.timeoutMs / 1000} s`);
    if (outputs?.problems.length) return finish(fields, "FAILED_PRECONDITION", outputs.problems.join("; "));
    return finish(fields, "OK");
  } finally {
    ctx.background(removeWorkspace(ws));
  }
}
