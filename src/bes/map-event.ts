// One BEP event (build_event_stream.BuildEvent) as ResultStore upload requests: the same
// UploadRequests a ResultStore uploader would send in an UploadBatch, so every rule of UploadBatch
// (parents exist, nothing after finalize, masks) applies to build events too. Mapping:
//   BuildStarted            -> the invocation: timing, command line, working directory, tool version
//   command lines, options  -> workspace_info.command_lines, invocation properties
//   WorkspaceStatus         -> properties; BUILD_USER -> users, BUILD_HOST -> hostname
//   BuildMetadata           -> properties (and LABELS -> labels)
//   Configuration           -> a configuration (cpu, mnemonic, platform, make variables)
//   TargetConfigured        -> a target (type, tags, test size)
//   TargetComplete          -> the configured target's status and a "build" action whose file sets
//                              are the output groups' named sets
//   NamedSetOfFiles         -> a file set
//   TestResult              -> a test action test_shard{S}_run{R}_attempt{A} with test.log, test.xml…
//   TestSummary             -> the configured target's (and target's) test status and counts
//   ActionExecuted          -> an action with stdout, stderr, exit code and failure message
//   Aborted                 -> the status (and reason) of what it aborts
//   BuildFinished           -> invocation status, duration and exit code
//   BuildToolLogs           -> invocation files and properties
//   last_message            -> the invocation is finalized
// Parents (target, configuration, configured target) are created when an event needs them before
// the event that describes them, as BEP does not promise that order.
import { create, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import { FieldMaskSchema, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "../errors.ts";
import { Status, type PropertySchema } from "../gen/google/devtools/resultstore/v2/common_pb.ts";
import type { File as RsFile } from "../gen/google/devtools/resultstore/v2/file_pb.ts";
import type { Invocation, InvocationSchema } from "../gen/google/devtools/resultstore/v2/invocation_pb.ts";
import type { ConfiguredTarget } from "../gen/google/devtools/resultstore/v2/configured_target_pb.ts";
import type { Target } from "../gen/google/devtools/resultstore/v2/target_pb.ts";
import type { TestSuite } from "../gen/google/devtools/resultstore/v2/test_suite_pb.ts";
import { TargetType, TestSize } from "../gen/google/devtools/resultstore/v2/target_pb.ts";
import {
  UploadRequest_UploadOperation as Op,
  UploadRequestSchema,
  type UploadRequest,
} from "../gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { TestCaching } from "../gen/google/devtools/resultstore/v2/action_pb.ts";
import { keyOf, nameOf, type ResourceKey } from "../resultstore/names.ts";
import {
  Aborted_AbortReason as Reason,
  TestStatus,
  durationOf,
  msOf,
  resultStoreFiles,
  simpleId,
  timeOf,
  type BuildEvent,
  type BuildEventId_ConfigurationId,
} from "./bep.ts";

/** What the mapping may ask about the invocation as committed so far. */
export interface MapContext {
  invocationId: string;
  exists(k: ResourceKey): boolean;
  /** The stored resource (its message), if any. */
  load<T extends Message>(k: ResourceKey): T | undefined;
  /** When the tool sent the event (BES event_time); absent for a recorded file. */
  eventTime?: Timestamp;
  /** The parsed test.xml at this file URI, when it was read from the CAS (src/bes/test-suites.ts). */
  testSuite?(uri: string): TestSuite | undefined;
}

type Resource = NonNullable<MessageInitShape<typeof UploadRequestSchema>["resource"]>;
type Ids = { targetId?: string; configurationId?: string; actionId?: string; fileSetId?: string };

const TEST_STATUS: Record<TestStatus, Status> = {
  [TestStatus.NO_STATUS]: Status.UNKNOWN,
  [TestStatus.PASSED]: Status.PASSED,
  [TestStatus.FLAKY]: Status.FLAKY,
  [TestStatus.TIMEOUT]: Status.TIMED_OUT,
  [TestStatus.FAILED]: Status.FAILED,
  [TestStatus.INCOMPLETE]: Status.INCOMPLETE,
  [TestStatus.REMOTE_FAILURE]: Status.TOOL_FAILED,
  [TestStatus.FAILED_TO_BUILD]: Status.FAILED_TO_BUILD,
  [TestStatus.TOOL_HALTED_BEFORE_TESTING]: Status.CANCELLED,
};

const ABORTED: Record<Reason, Status> = {
  [Reason.UNKNOWN]: Status.UNKNOWN,
  [Reason.USER_INTERRUPTED]: Status.CANCELLED,
  [Reason.NO_ANALYZE]: Status.SKIPPED,
  [Reason.NO_BUILD]: Status.SKIPPED,
  [Reason.TIME_OUT]: Status.TIMED_OUT,
  [Reason.REMOTE_ENVIRONMENT_FAILURE]: Status.TOOL_FAILED,
  [Reason.INTERNAL]: Status.TOOL_FAILED,
  [Reason.LOADING_FAILURE]: Status.FAILED_TO_BUILD,
  [Reason.ANALYSIS_FAILURE]: Status.FAILED_TO_BUILD,
  [Reason.SKIPPED]: Status.SKIPPED,
  [Reason.INCOMPLETE]: Status.INCOMPLETE,
  [Reason.OUT_OF_MEMORY]: Status.TOOL_FAILED,
};

/** Bazel's exit codes (BuildFinished.exit_code) that say more than "the tool failed". */
function finishedStatus(code: number, command: string): Status {
  if (code === 0) return command === "test" || command === "coverage" ? Status.PASSED : Status.BUILT;
  if (code === 1) return Status.FAILED_TO_BUILD;
  if (code === 3) return Status.FAILED;
  if (code === 8) return Status.CANCELLED;
  return Status.TOOL_FAILED;
}

/** Builds the requests of one event; tracks what it creates so parents are created once. */
class Requests {
  readonly out: UploadRequest[] = [];
  private readonly created = new Set<string>();

  constructor(private readonly ctx: MapContext) {}

  private push(op: Op, ids: Ids, resource: Resource, paths: string[] = [], createIfNotFound = false) {
    this.out.push(
      create(UploadRequestSchema, {
        id: ids,
        uploadOperation: op,
        updateMask: paths.length ? create(FieldMaskSchema, { paths }) : undefined,
        createIfNotFound,
        resource,
      }),
    );
  }

  private ensure(k: ResourceKey, ids: Ids, resource: Resource) {
    const name = nameOf(k);
    if (this.created.has(name) || this.ctx.exists(k)) return;
    this.created.add(name);
    this.push(Op.CREATE, ids, resource);
  }

  invocation(paths: string[], value: MessageInitShape<typeof InvocationSchema>, merge = false) {
    this.push(merge ? Op.MERGE : Op.UPDATE, {}, { case: "invocation", value }, paths);
  }

  target(label: string) {
    const targetId = targetIdOf(label);
    this.ensure(keyOf("target", this.ctx.invocationId, { targetId }), { targetId }, { case: "target", value: {} });
    return targetId;
  }

  configuration(id: BuildEventId_ConfigurationId | undefined) {
    const configurationId = configIdOf(id);
    this.ensure(keyOf("configuration", this.ctx.invocationId, { configId: configurationId }), { configurationId }, { case: "configuration", value: {} });
    return configurationId;
  }

  /** The target, its configuration and the configured target, created as needed; their ids. */
  configuredTarget(label: string, config: BuildEventId_ConfigurationId | undefined) {
    const targetId = this.target(label);
    const configurationId = this.configuration(config);
    this.ensure(
      keyOf("configuredTarget", this.ctx.invocationId, { targetId, configId: configurationId }),
      { targetId, configurationId },
      { case: "configuredTarget", value: {} },
    );
    return { targetId, configurationId };
  }

  update(ids: Ids, resource: Resource, paths: string[]) {
    this.push(Op.UPDATE, ids, resource, paths, resource.case !== "invocation");
  }

  merge(ids: Ids, resource: Resource, paths: string[]) {
    this.push(Op.MERGE, ids, resource, paths);
  }

  finalize() {
    this.push(Op.FINALIZE, {}, { case: "invocation", value: {} });
  }
}

function targetIdOf(label: string): string {
  if (!label) throw invalidArgument("the event names no target label", "bazel_event.id");
  return label;
}

/** Bazel's configuration checksum (64 hex), or "none" for unconfigured things. */
const configIdOf = (id: BuildEventId_ConfigurationId | undefined) => simpleId("", id?.id || "none");

/** Longest property value kept: a link action's command line can run to megabytes. */
const MAX_PROPERTY = 64 * 1024;

const props = (entries: [string, string][]): MessageInitShape<typeof PropertySchema>[] =>
  entries.filter(([, v]) => v !== "").map(([key, value]) => ({ key, value: value.length > MAX_PROPERTY ? value.slice(0, MAX_PROPERTY) + "…" : value }));

function targetType(kind: string): TargetType {
  if (/_test rule$/.test(kind) || kind === "test_suite rule") return TargetType.TEST;
  if (/_binary rule$/.test(kind)) return TargetType.BINARY;
  if (/_library rule$/.test(kind)) return TargetType.LIBRARY;
  return TargetType.TARGET_TYPE_UNSPECIFIED;
}

/** The ResultStore upload requests for one BEP event (possibly none). */
export function mapBuildEvent(ev: BuildEvent, ctx: MapContext): UploadRequest[] {
  const r = new Requests(ctx);
  const id = ev.id?.id;
  const p = ev.payload;
  switch (p.case) {
    case "started": {
      const s = p.value;
      if (s.uuid && s.uuid.toLowerCase() !== ctx.invocationId) {
        throw invalidArgument(`BuildStarted.uuid ${s.uuid} is not the stream's invocation id ${ctx.invocationId}`, "bazel_event.started.uuid");
      }
      // Bazel 4 names no user or host here (WorkspaceStatus does); newer Bazel does.
      const who = [...(s.user ? ["invocation_attributes.users"] : []), ...(s.host ? ["workspace_info.hostname"] : [])];
      r.invocation(["timing.start_time", "workspace_info.working_directory", "workspace_info.tool_tag", "status_attributes", ...who], {
        timing: { startTime: timeOf(s.startTime, s.startTimeMillis) },
        workspaceInfo: { workingDirectory: s.workingDirectory, toolTag: "bazel", hostname: s.host },
        invocationAttributes: { users: s.user ? [s.user] : [] },
        statusAttributes: { status: s.command === "test" || s.command === "coverage" ? Status.TESTING : Status.BUILDING },
      });
      r.invocation(["properties"], {
        properties: props([
          ["bazel.command", s.command],
          ["bazel.version", s.buildToolVersion],
          ["bazel.workspace_directory", s.workspaceDirectory],
          ["bazel.options", s.optionsDescription],
        ]),
      }, true);
      break;
    }
    case "structuredCommandLine": {
      const c = p.value;
      const args: string[] = [];
      for (const s of c.sections) {
        if (s.sectionType.case === "chunkList") args.push(...s.sectionType.value.chunk);
        else if (s.sectionType.case === "optionList") args.push(...s.sectionType.value.option.map((o) => o.combinedForm).filter(Boolean));
      }
      if (args.length === 0) break;
      const command = c.sections.find((s) => s.sectionLabel === "command" && s.sectionType.case === "chunkList");
      r.invocation(["workspace_info.command_lines"], {
        workspaceInfo: {
          commandLines: [{ label: c.commandLineLabel || "original", tool: "bazel", args, command: command?.sectionType.case === "chunkList" ? (command.sectionType.value.chunk[0] ?? "") : "" }],
        },
      }, true);
      break;
    }
    case "optionsParsed": {
      const o = p.value;
      r.invocation(["properties"], {
        properties: props([
          ["bazel.explicit_startup_options", o.explicitStartupOptions.join(" ")],
          ["bazel.explicit_options", o.explicitCmdLine.join(" ")],
          ["bazel.tool_tag", o.toolTag],
        ]),
      }, true);
      break;
    }
    case "workspaceStatus": {
      const items = p.value.item;
      const value = (k: string) => items.find((i) => i.key === k)?.value ?? "";
      r.invocation(["properties"], { properties: props(items.map((i) => [`workspace_status.${i.key}`, i.value])) }, true);
      const paths = [...(value("BUILD_USER") ? ["invocation_attributes.users"] : []), ...(value("BUILD_HOST") ? ["workspace_info.hostname"] : [])];
      if (paths.length) r.invocation(paths, { invocationAttributes: { users: [value("BUILD_USER")] }, workspaceInfo: { hostname: value("BUILD_HOST") } });
      break;
    }
    case "buildMetadata": {
      const m = p.value.metadata;
      const entries = Object.entries(m);
      if (entries.length) r.invocation(["properties"], { properties: props(entries.map(([k, v]) => [`build_metadata.${k}`, v])) }, true);
      const labels = (m["LABELS"] ?? "").split(",").map((s) => s.trim()).filter(Boolean);
      if (labels.length) r.invocation(["invocation_attributes.labels"], { invocationAttributes: { labels } }, true);
      break;
    }
    case "configuration": {
      if (id?.case !== "configuration") throw invalidArgument("a Configuration event needs a configuration id", "bazel_event.id");
      const c = p.value;
      const configurationId = configIdOf(id.value);
      r.update({ configurationId }, {
        case: "configuration",
        value: {
          displayName: c.mnemonic,
          configurationAttributes: { cpu: c.cpu },
          properties: props([
            ["mnemonic", c.mnemonic],
            ["platform_name", c.platformName],
            ["is_tool", c.isTool ? "true" : ""],
            ...Object.entries(c.makeVariable).map(([k, v]) => [`make_variable.${k}`, v] as [string, string]),
          ]),
        },
      }, ["display_name", "configuration_attributes", "properties"]);
      break;
    }
    case "configured": {
      if (id?.case !== "targetConfigured") throw invalidArgument("a TargetConfigured event needs a target_configured id", "bazel_event.id");
      const t = p.value;
      const targetId = targetIdOf(id.value.label);
      const size = t.testSize as number as TestSize;
      r.update({ targetId }, {
        case: "target",
        value: {
          visible: true,
          targetAttributes: { type: targetType(t.targetKind), tags: t.tag },
          testAttributes: size ? { size } : undefined,
          properties: props([["target_kind", t.targetKind]]),
          // A target's build starts when it is configured (only a live stream has event times).
          timing: ctx.eventTime ? { startTime: ctx.eventTime } : undefined,
        },
      }, ["visible", "target_attributes", "test_attributes", "properties", ...(ctx.eventTime ? ["timing"] : [])]);
      break;
    }
    case "namedSetOfFiles": {
      if (id?.case !== "namedSet") throw invalidArgument("a NamedSetOfFiles event needs a named_set id", "bazel_event.id");
      const fileSetId = fileSetIdOf(id.value.id);
      const fileSetName = (fileSetId: string) => nameOf(keyOf("fileSet", ctx.invocationId, { fileSetId }));
      // A resource row holds at most ~2 MB: a named set of tens of thousands of files is stored
      // as parts, file sets "{id}_part{n}" that the named set's own file set includes.
      const [head, ...parts] = partsOf(resultStoreFiles(p.value.files));
      parts.forEach((files, i) => r.update({ fileSetId: `${fileSetId}_part${i + 1}` }, { case: "fileSet", value: { files } }, ["files"]));
      r.update({ fileSetId }, {
        case: "fileSet",
        value: {
          files: head ?? [],
          fileSets: [
            ...p.value.fileSets.map((s) => fileSetName(fileSetIdOf(s.id))),
            ...parts.map((_, i) => fileSetName(`${fileSetId}_part${i + 1}`)),
          ],
        },
      }, ["files", "file_sets"]);
      break;
    }
    case "completed": {
      if (id?.case !== "targetCompleted") throw invalidArgument("a TargetComplete event needs a target_completed id", "bazel_event.id");
      const c = p.value;
      const ids = r.configuredTarget(id.value.label, id.value.configuration);
      const status = c.success ? Status.BUILT : Status.FAILED_TO_BUILD;
      const description = c.failureDetail?.message ?? "";
      const fileSetsOf = (groups: typeof c.outputGroup) => groups.flatMap((g) => g.fileSets.map((s) => nameOf(keyOf("fileSet", ctx.invocationId, { fileSetId: fileSetIdOf(s.id) }))));
      if (id.value.aspect) {
        // An aspect's completion (BEP sends one per aspect, after the target's own) is the
        // aspect's action of the configured target (aspectActionId): it leaves the target's
        // status, timing, test attributes and outputs as its own completion set them.
        r.update({ ...ids, actionId: aspectActionId(id.value.aspect) }, {
          case: "action",
          value: { statusAttributes: { status, description }, actionType: { case: "buildAction", value: {} }, fileSets: fileSetsOf(c.outputGroup), files: resultStoreFiles(c.directoryOutput) },
        }, ["status_attributes", "build_action", "file_sets", "files"]);
        break;
      }
      // From TargetConfigured to TargetComplete, when the stream has event times.
      const start = ctx.load<Target>(keyOf("target", ctx.invocationId, { targetId: ids.targetId }))?.timing?.startTime;
      const timing = start && ctx.eventTime ? { startTime: start, duration: durationOf(undefined, BigInt(Math.max(0, timestampMs(ctx.eventTime) - timestampMs(start)))) } : undefined;
      const timed = timing ? ["timing"] : [];
      r.update(ids, {
        case: "configuredTarget",
        value: {
          statusAttributes: { status, description },
          timing,
          testAttributes: c.testTimeout || c.testTimeoutSeconds ? { timeoutDuration: durationOf(c.testTimeout, c.testTimeoutSeconds * 1000n) } : undefined,
        },
      }, ["status_attributes", "test_attributes", ...timed]);
      r.update({ targetId: ids.targetId }, { case: "target", value: { statusAttributes: { status, description }, timing } }, ["status_attributes", ...timed]);
      const fileSets = fileSetsOf(c.outputGroup);
      r.update({ ...ids, actionId: "build" }, {
        case: "action",
        value: {
          statusAttributes: { status, description },
          actionType: { case: "buildAction", value: {} },
          fileSets,
          // Not important_output: Bazel 4 repeats the default output group there, which can be
          // more files than a resource holds, and the output groups' file sets already have them.
          files: resultStoreFiles(c.directoryOutput),
        },
      }, ["status_attributes", "build_action", "file_sets", "files"]);
      break;
    }
    case "testResult": {
      if (id?.case !== "testResult") throw invalidArgument("a TestResult event needs a test_result id", "bazel_event.id");
      const t = p.value;
      const ids = r.configuredTarget(id.value.label, id.value.configuration);
      // BEP counts runs, shards and attempts from 1; ResultStore from 0.
      const shard = Math.max(0, id.value.shard - 1);
      const run = Math.max(0, id.value.run - 1);
      const attempt = Math.max(0, id.value.attempt - 1);
      const duration = durationOf(t.testAttemptDuration, t.testAttemptDurationMillis);
      const exec = t.executionInfo;
      const files = resultStoreFiles(t.testActionOutput);
      const xml = files.find((f) => f.uid === "test.xml");
      r.update({ ...ids, actionId: `test_shard${shard}_run${run}_attempt${attempt}` }, {
        case: "action",
        value: {
          statusAttributes: { status: TEST_STATUS[t.status] ?? Status.UNKNOWN, description: t.statusDetails },
          timing: { startTime: timeOf(t.testAttemptStart, t.testAttemptStartMillisEpoch), duration },
          actionType: {
            case: "testAction",
            value: {
              shardNumber: shard,
              runNumber: run,
              attemptNumber: attempt,
              testTiming: {
                location: { case: "local", value: { testProcessDuration: duration } },
                testCaching: t.cachedLocally ? TestCaching.LOCAL_CACHE_HIT : exec?.cachedRemotely ? TestCaching.REMOTE_CACHE_HIT : TestCaching.CACHE_MISS,
              },
              warnings: t.warning.map((w) => ({ warningMessage: w })),
              testSuite: xml ? ctx.testSuite?.(xml.uri) : undefined,
            },
          },
          actionAttributes: { exitCode: exec?.exitCode ?? 0, hostname: exec?.hostname ?? "" },
          properties: props([["strategy", exec?.strategy ?? ""]]),
          files,
        },
      }, ["status_attributes", "timing", "test_action", "action_attributes", "properties", "files"]);
      break;
    }
    case "testSummary": {
      if (id?.case !== "testSummary") throw invalidArgument("a TestSummary event needs a test_summary id", "bazel_event.id");
      const s = p.value;
      const ids = r.configuredTarget(id.value.label, id.value.configuration);
      const status = TEST_STATUS[s.overallStatus] ?? Status.UNKNOWN;
      const start = timeOf(s.firstStartTime, s.firstStartTimeMillis);
      const stop = msOf(timeOf(s.lastStopTime, s.lastStopTimeMillis));
      // UploadBatch replaces test_attributes whole: keep the timeout TargetComplete set.
      const stored = ctx.load<ConfiguredTarget>(keyOf("configuredTarget", ctx.invocationId, { targetId: ids.targetId, configId: ids.configurationId }));
      r.update(ids, {
        case: "configuredTarget",
        value: {
          statusAttributes: { status },
          timing: start ? { startTime: start, duration: stop !== undefined ? durationOf(undefined, BigInt(Math.max(0, stop - timestampMs(start)))) : undefined } : undefined,
          testAttributes: { totalRunCount: s.runCount || s.totalRunCount, totalShardCount: s.shardCount, timeoutDuration: stored?.testAttributes?.timeoutDuration },
        },
      }, ["status_attributes", "timing", "test_attributes"]);
      r.update({ targetId: ids.targetId }, { case: "target", value: { statusAttributes: { status } } }, ["status_attributes"]);
      break;
    }
    case "action": {
      const a = p.value;
      const label = id?.case === "actionCompleted" ? id.value.label : a.label;
      if (!label) break; // an action no target owns has nowhere to go in ResultStore
      const config = id?.case === "actionCompleted" ? id.value.configuration : a.configuration;
      const ids = r.configuredTarget(label, config);
      const primary = id?.case === "actionCompleted" ? id.value.primaryOutput : "";
      const status = a.success ? Status.BUILT : Status.FAILED_TO_BUILD;
      r.update({ ...ids, actionId: simpleId("action_", primary || a.type) }, {
        case: "action",
        value: {
          statusAttributes: { status, description: a.failureDetail?.message ?? "" },
          timing: a.startTime ? { startTime: a.startTime, duration: a.endTime ? durationOf(undefined, BigInt(Math.max(0, timestampMs(a.endTime) - timestampMs(a.startTime)))) : undefined } : undefined,
          actionType: { case: "buildAction", value: { type: a.type, primaryOutputPath: primary } },
          actionAttributes: { exitCode: a.exitCode },
          properties: props([["command_line", a.commandLine.join(" ")]]),
          files: resultStoreFiles([a.stdout, a.stderr, a.primaryOutput].filter((f) => f !== undefined)),
        },
      }, ["status_attributes", "timing", "build_action", "action_attributes", "properties", "files"]);
      break;
    }
    case "aborted": {
      const status = ABORTED[p.value.reason] ?? Status.UNKNOWN;
      const statusAttributes = { status, description: p.value.description || Reason[p.value.reason] };
      if (id?.case === "targetCompleted" && id.value.aspect) {
        // An aspect that did not complete: its action, not the target (see "completed").
        const ids = r.configuredTarget(id.value.label, id.value.configuration);
        r.update({ ...ids, actionId: aspectActionId(id.value.aspect) }, { case: "action", value: { statusAttributes, actionType: { case: "buildAction", value: {} } } }, ["status_attributes", "build_action"]);
      } else if (id?.case === "targetCompleted" || id?.case === "testSummary" || id?.case === "testResult") {
        const ids = r.configuredTarget(id.value.label, id.value.configuration);
        r.update(ids, { case: "configuredTarget", value: { statusAttributes } }, ["status_attributes"]);
        r.update({ targetId: ids.targetId }, { case: "target", value: { statusAttributes } }, ["status_attributes"]);
      } else if (id?.case === "targetConfigured") {
        const targetId = r.target(id.value.label);
        r.update({ targetId }, { case: "target", value: { statusAttributes } }, ["status_attributes"]);
      } else if (id?.case === "buildFinished" || id?.case === "started") {
        r.invocation(["status_attributes"], { statusAttributes });
      }
      break;
    }
    case "finished": {
      const f = p.value;
      const code = f.exitCode?.code ?? 0;
      const inv = ctx.load<Invocation>(keyOf("invocation", ctx.invocationId));
      const command = inv?.properties.find((x) => x.key === "bazel.command")?.value ?? "";
      const end = msOf(timeOf(f.finishTime, f.finishTimeMillis));
      const start = msOf(inv?.timing?.startTime);
      r.invocation(["status_attributes", "invocation_attributes.exit_code", ...(end !== undefined && start !== undefined ? ["timing.duration"] : [])], {
        statusAttributes: { status: finishedStatus(code, command), description: f.exitCode?.name ?? "" },
        invocationAttributes: { exitCode: code },
        timing: end !== undefined && start !== undefined ? { duration: durationOf(undefined, BigInt(Math.max(0, end - start))) } : undefined,
      });
      break;
    }
    case "buildToolLogs": {
      const logs = p.value.log;
      const files = resultStoreFiles(logs);
      if (files.length) r.invocation(["files"], { files }, true);
      // Short inline logs ("elapsed time", "critical path") are text worth keeping as properties.
      const inline: [string, string][] = [];
      for (const l of logs) if (l.file.case === "contents" && l.file.value.byteLength <= 4096) inline.push([`bazel.log.${l.name}`, new TextDecoder().decode(l.file.value)]);
      if (inline.length) r.invocation(["properties"], { properties: props(inline) }, true);
      break;
    }
    default:
      break; // progress, patterns, fetches, metrics…: nothing ResultStore keeps
  }
  if (ev.lastMessage) r.finalize();
  return r.out;
}

const fileSetIdOf = (namedSetId: string) => simpleId("named_set_", namedSetId);

/**
 * The action of an aspect's completion, e.g. "aspect_lint" for "//tools:lint.bzl%lint": readable
 * (the part after %), and unique by a hash of the whole name when that is not already an id.
 */
function aspectActionId(aspect: string): string {
  const short = aspect.slice(aspect.lastIndexOf("%") + 1);
  return short === aspect && /^[A-Za-z0-9_-]{1,200}$/.test(aspect) ? `aspect_${aspect}` : simpleId(`aspect_${short.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 200)}_`, aspect);
}

/** Bytes of files per file set, well under a resource row's ~2 MB. */
const FILE_SET_PART_BYTES = 1024 * 1024;

/** Files in runs of at most FILE_SET_PART_BYTES (by their uid and uri, which is most of a File). */
function partsOf(files: RsFile[]): RsFile[][] {
  const parts: RsFile[][] = [];
  let part: RsFile[] = [];
  let bytes = 0;
  for (const f of files) {
    const size = f.uid.length + f.uri.length + f.digest.length + 32;
    if (part.length && bytes + size > FILE_SET_PART_BYTES) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(f);
    bytes += size;
  }
  if (part.length) parts.push(part);
  return parts;
}
