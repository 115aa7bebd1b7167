// One assigned action from start to finish, in named phases: fetch the input tree and stage it
// (the Action and Command come with the assignment), run the command in the sandbox, upload
// stdout, stderr and the outputs, and assemble the ExecuteResponse with its ExecutedActionMetadata.
// An action that cannot run (malformed tree, missing blobs, too large) is thrown as a ConnectError,
// which the runner sends as CompleteRequest.error.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, TimestampSchema, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  ActionResultSchema,
  ExecutedActionMetadataSchema,
  ExecuteResponseSchema,
  type Action,
  type Command,
  type ExecuteResponse,
} from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { Phase } from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { parseDigest, toProtoDigest } from "../../src/shared/digest.ts";
import { parseInstanceName } from "../../src/shared/resource-names.ts";
import { CasClient, type BlobSource } from "./cas-client.ts";
import { collectOutputs, type CollectedOutputs } from "./collect-outputs.ts";
import { planCommand, type CommandPlan } from "../../src/shared/command-plan.ts";
import { Code } from "./errors.ts";
import type { FileCache } from "./file-cache.ts";
import { digestOfFile } from "./hash.ts";
import { Limiter } from "./limit.ts";
import { runCommand } from "./run-command.ts";
import { effectivePlatform } from "../../src/shared/platform.ts";
import { NETWORK_PROPERTY, type Sandbox } from "./sandbox.ts";
import { checkInputSize, fetchInputTree, prepareWorkingDirectory, stageInputs, type InputLimits } from "./stage-inputs.ts";
import { createWorkspace, removeWorkspace, type Workspace } from "./workspace.ts";

/** One assignment, as executeAction needs it. */
export interface Job {
  instanceName: string;
  action: Action;
  command: Command;
  timeoutMs: number;
  queuedTime?: Timestamp;
  /** The lease token: the CAS accepts it for this action's instance only. */
  token: string;
  /** Which of the runner's slots runs it (picks the uid when the runner is root). */
  slot: number;
}

export interface RunnerContext {
  /** ExecutedActionMetadata.worker: `{hostname}/{runner id}`. */
  worker: string;
  /** The worker's base URL (the CAS is always the runner's own --url, never one from a message). */
  url: string;
  workDir: string;
  killGraceMs: number;
  cache: FileCache;
  /** CAS requests in flight, across all actions. */
  transfers: Limiter;
  sandbox: Sandbox;
  limits: InputLimits;
  /** Work directories are removed in the background; the runner waits for them on close. */
  background: (p: Promise<unknown>) => void;
}

export interface JobHooks {
  phase(phase: Phase): void;
  /** The command is about to start writing these files: stream them live until `finish`. */
  liveOutput?(stdoutPath: string, stderrPath: string): { finish(): Promise<void> };
}

/** How long the result waits for the live output's last appends once the outputs are uploaded. */
const LIVE_TAIL_GRACE_MS = 5000;

/** Files hashed at once per action when collecting outputs. */
const HASH_CONCURRENCY = 8;

/** Wall-clock time with sub-millisecond precision, so that close stages keep their order. */
function now(): Timestamp {
  const ms = performance.timeOrigin + performance.now();
  return create(TimestampSchema, { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.floor((ms % 1000) * 1e6) });
}

/** Whether the action's platform, as the worker placed it (shared/platform.ts), asks for the network. */
export function wantsNetwork(job: Pick<Job, "action" | "command">): boolean {
  return effectivePlatform(job.action, job.command).some(([name, value]) => name === NETWORK_PROPERTY && value === "on");
}

export async function executeAction(ctx: RunnerContext, job: Job, signal: AbortSignal, hooks: JobHooks): Promise<ExecuteResponse> {
  const started = now();
  const metadata = create(ExecutedActionMetadataSchema, {
    worker: ctx.worker,
    queuedTimestamp: job.queuedTime ?? started,
    workerStartTimestamp: started,
  });
  const cas = new CasClient(
    { casUrl: ctx.url, instanceName: parseInstanceName(job.instanceName), authorization: `Bearer ${job.token}` },
    ctx.transfers,
  );
  const owner = ctx.sandbox.identity(job.slot);
  const ws: Workspace = await createWorkspace(ctx.workDir);
  const finish = (fields: MessageInitShape<typeof ActionResultSchema>, code: Code | 0, message = ""): ExecuteResponse => {
    metadata.workerCompletedTimestamp = now();
    const result = create(ActionResultSchema, { ...fields, executionMetadata: metadata });
    return create(ExecuteResponseSchema, { result, status: { code, message }, message });
  };
  try {
    // Inputs.
    hooks.phase(Phase.FETCHING_INPUTS);
    metadata.inputFetchStartTimestamp = now();
    let staged: { plan: CommandPlan; cwd: string };
    try {
      const plan = planCommand(job.command);
      const inputRoot = parseDigest(job.action.inputRootDigest, "action.input_root_digest");
      const tree = await fetchInputTree(cas, inputRoot, ctx.limits, signal);
      checkInputSize(tree, inputRoot, ctx.limits);
      await stageInputs(tree, inputRoot, ws.inputRoot, cas, ctx.cache, owner, signal);
      staged = { plan, cwd: await prepareWorkingDirectory(ws.inputRoot, plan, owner) };
    } catch (e) {
      if (signal.aborted) return finish({}, Code.Canceled, "cancelled while fetching inputs");
      throw e;
    }
    metadata.inputFetchCompletedTimestamp = now();

    // Execution.
    hooks.phase(Phase.RUNNING);
    metadata.executionStartTimestamp = now();
    const live = hooks.liveOutput?.(ws.stdoutPath, ws.stderrPath);
    const network = wantsNetwork(job);
    const run = await runCommand({
      argv: staged.plan.argv,
      env: staged.plan.env,
      cwd: staged.cwd,
      stdoutPath: ws.stdoutPath,
      stderrPath: ws.stderrPath,
      timeoutMs: job.timeoutMs,
      killGraceMs: ctx.killGraceMs,
      signal,
      launch: (program, argv) => ctx.sandbox.plan(program, argv, { inputRoot: ws.inputRoot, cwd: staged.cwd, network }),
      identity: owner,
    });
    metadata.executionCompletedTimestamp = now();
    metadata.virtualExecutionDuration = durationFromMs(Math.round(run.completedAt - run.startedAt));

    // Outputs: none from an action that did not finish, but its stdout and stderr so far.
    hooks.phase(Phase.UPLOADING_OUTPUTS);
    metadata.outputUploadStartTimestamp = now();
    const liveDone = live?.finish();
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
    // The live view is best effort: a slow worker may delay the result a little, not for long.
    if (liveDone) await Promise.race([liveDone, new Promise((r) => setTimeout(r, LIVE_TAIL_GRACE_MS).unref())]);
    metadata.outputUploadCompletedTimestamp = now();

    const fields = { ...outputs?.fields, exitCode: run.exitCode, stdoutDigest, stderrDigest };
    if (run.cancelled || signal.aborted) return finish(fields, Code.Canceled, "the action was cancelled");
    if (run.timedOut) return finish(fields, Code.DeadlineExceeded, `the action exceeded its timeout of ${job.timeoutMs / 1000} s`);
    if (outputs?.problems.length) return finish(fields, Code.FailedPrecondition, outputs.problems.join("; "));
    return finish(fields, 0);
  } finally {
    ctx.background(removeWorkspace(ws));
  }
}
