// The runner: dials the worker's pool (one WebSocket per shard, pool-connection.ts), takes
// assignments while it has free slots (counted across all shards), runs each action
// (execute-action.ts) while heartbeats renew its lease, streams its output live, and reports the
// outcome with RunnerService.Complete. It never listens on a port.
import { durationMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { ExecuteResponse } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Phase, type Assignment, type Progress, type Welcome } from "../../src/gen/kiln/runner/v1/runner_pb.ts";
import { defaultOptions, type RunnerOptions } from "./config.ts";
import { invalidArgument, toStatus } from "./errors.ts";
import { executeAction, type Job, type RunnerContext } from "./execute-action.ts";
import { FileCache } from "./file-cache.ts";
import { Limiter } from "./limit.ts";
import { startLiveLog } from "./live-log.ts";
import { PoolConnection, type RunnerMessageInit, type ShardHandlers } from "./pool-connection.ts";
import { RunnerServiceClient, type Outcome } from "./runner-service.ts";
import { createSandbox, NETWORK_PROPERTY } from "./sandbox.ts";

export const RUNNER_VERSION = "kiln-runner/1";

export interface StartOptions extends Partial<Omit<RunnerOptions, "url" | "token">> {
  url: string;
  token: string;
  /** One line per action and per connection event; silent if unset. */
  log?: (line: string) => void;
}

export interface Runner {
  id: string;
  /** "bwrap" or "none": how actions are sandboxed here. */
  sandbox: string;
  /** Stops taking work, kills running actions (their leases lapse and the pool re-queues them), disconnects. */
  close(): Promise<void>;
}

interface Lease {
  id: string;
  shard: number;
  slot: number;
  phase: Phase;
  abort: AbortController;
  /** Stopped by close(), not cancelled by the pool: no result is sent, the lease lapses. */
  shutdown: boolean;
}

const DEFAULT_TIMEOUT_MS = 3600_000;

/** Where an action's time went, from its ExecutedActionMetadata: for the log. */
function phases(r: ExecuteResponse): string {
  const m = r.result?.executionMetadata;
  const ms = (a?: Timestamp, b?: Timestamp) => (a && b ? `${Math.round(timestampMs(b) - timestampMs(a))}` : "-");
  return `inputs ${ms(m?.inputFetchStartTimestamp, m?.inputFetchCompletedTimestamp)} ms, run ${ms(m?.executionStartTimestamp, m?.executionCompletedTimestamp)} ms, outputs ${ms(m?.outputUploadStartTimestamp, m?.outputUploadCompletedTimestamp)} ms`;
}

/** Actions run as other uids (the runner is root): each must be able to reach its input root under `dir`. */
async function checkSearchable(dir: string, actionUid: number): Promise<void> {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const st = await fs.stat(d);
    if ((st.mode & 0o001) === 0) {
      throw new Error(`${d} is not searchable by other users (mode ${(st.mode & 0o777).toString(8)}), but actions run as uid ${actionUid} and up and must reach their work directories under ${dir}: choose another --work-dir, or chmod o+x ${d}`);
    }
    if (d === path.dirname(d)) return;
  }
}

/** Connects to the pool and resolves once shard 0 has welcomed the runner; rejects on a bad key. */
export async function startRunner(o: StartOptions): Promise<Runner> {
  // Options left undefined keep their defaults.
  const given = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  const options: RunnerOptions = { ...defaultOptions(), ...given } as RunnerOptions;
  const log = o.log;
  await fs.mkdir(options.workDir, { recursive: true });
  // Traversable, not listable: work directories of other slots' uids stay out of sight.
  await fs.chmod(options.workDir, 0o711);
  const sandbox = await createSandbox({ mode: options.sandbox, actionUid: options.actionUid, hide: [options.workDir, options.cacheDir] });
  const root = process.getuid?.() === 0;
  if (root) await checkSearchable(options.workDir, options.actionUid);
  // What the sandbox can do about the network, offered as a platform property unless configured:
  // with bwrap an action may ask for network=on or =off; without it, every action has the network.
  if (!options.properties.some((p) => p.name === NETWORK_PROPERTY)) {
    const values = sandbox.kind === "bwrap" ? ["off", "on"] : ["on"];
    options.properties = [...options.properties, ...values.map((value) => ({ name: NETWORK_PROPERTY, value }))];
  }
  const cache = new FileCache(options.cacheDir, options.cacheBytes, root ? { mode: "link", verify: false } : { mode: "copy", verify: sandbox.kind === "none" });
  await cache.init();
  const service = new RunnerServiceClient(options.url);

  const inflight = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>) => {
    const q = p.catch((e) => log?.(`background task failed: ${(e as Error)?.message ?? e}`)).finally(() => inflight.delete(q));
    inflight.add(q);
  };
  const ctx: RunnerContext = {
    worker: `${os.hostname()}/${options.id}`,
    url: options.url,
    workDir: options.workDir,
    killGraceMs: options.killGraceMs,
    cache,
    transfers: new Limiter(options.transfers),
    sandbox,
    limits: { maxEntries: options.maxInputEntries, maxBytes: options.maxInputBytes },
    background: track,
  };

  const leases = new Map<string, Lease>();
  /** Slot numbers not running anything (a slot's number picks its uid). */
  const freeSlots = Array.from({ length: options.slots }, (_, i) => options.slots - 1 - i);
  const shards = new Map<number, PoolConnection>();
  let closing = false;
  /** Aborted by close(): results still being retried are given up. */
  const stopping = new AbortController();

  let welcomed!: () => void;
  let refused!: (e: Error) => void;
  const ready = new Promise<void>((resolve, reject) => ((welcomed = resolve), (refused = reject)));

  const send = (shard: number, kind: RunnerMessageInit) => shards.get(shard)?.send(kind);

  /** A slot came free: every shard that was refused learns it may assign again. */
  const freeSlot = (slot: number) => {
    freeSlots.push(slot);
    if (closing) return;
    for (const c of shards.values()) {
      if (c.owesReady && c.send({ case: "ready", value: { freeSlots: freeSlots.length } })) c.owesReady = false;
    }
  };

  async function run(lease: Lease, a: Assignment, token: string): Promise<void> {
    const t0 = performance.now();
    let outcome: Outcome;
    try {
      if (!a.action || !a.command) throw invalidArgument("the assignment carries no Action or Command");
      const job: Job = {
        instanceName: a.instanceName,
        action: a.action,
        command: a.command,
        timeoutMs: a.timeout ? durationMs(a.timeout) || DEFAULT_TIMEOUT_MS : DEFAULT_TIMEOUT_MS,
        queuedTime: a.queuedTime,
        token,
        slot: lease.slot,
      };
      const response = await executeAction(ctx, job, lease.abort.signal, {
        phase: (p) => {
          lease.phase = p;
        },
        liveOutput: (stdout, stderr) => startLiveLog({ client: service, leaseId: lease.id, token, log }, stdout, stderr),
      });
      outcome = { response };
      log?.(`${lease.id}: exit ${response.result?.exitCode ?? "-"}, status ${response.status?.code ?? 0} in ${Math.round(performance.now() - t0)} ms (${phases(response)})`);
    } catch (e) {
      outcome = { error: toStatus(e) };
      log?.(`${lease.id}: could not run: ${outcome.error.message}`);
    }
    // The slot is free before the result is sent, so the pool can assign the next action as soon
    // as it has this one's result; the lease keeps being renewed until the result has landed.
    freeSlot(lease.slot);
    try {
      if (lease.shutdown) return;
      const answer = await service.complete(lease.id, token, outcome, stopping.signal);
      if (!answer.accepted) log?.(`${lease.id}: result dropped by the worker: ${answer.reason || "lease no longer current"}`);
    } catch (e) {
      log?.(`${lease.id}: could not deliver the result: ${(e as Error).message}`);
    } finally {
      leases.delete(lease.id);
    }
  }

  const handlers: ShardHandlers = {
    log,
    welcome(shard: number, w: Welcome) {
      if (shard === 0) welcomed();
      // Any shard may assign work: keep a connection to each of them.
      for (let s = 1; s < w.shardCount; s++) if (!shards.has(s)) connect(s);
    },
    assignment(shard: number, a: Assignment) {
      if (leases.has(a.leaseId)) return void send(shard, { case: "accepted", value: { leaseId: a.leaseId } });
      const slot = closing ? undefined : freeSlots.pop();
      if (slot === undefined) {
        send(shard, {
          case: "refused",
          value: { leaseId: a.leaseId, reason: closing ? "the runner is stopping" : `all ${options.slots} slots are busy`, freeSlots: 0 },
        });
        const c = shards.get(shard);
        if (c && !closing) c.owesReady = true;
        return;
      }
      const lease: Lease = { id: a.leaseId, shard, slot, phase: Phase.FETCHING_INPUTS, abort: new AbortController(), shutdown: false };
      leases.set(lease.id, lease);
      send(shard, { case: "accepted", value: { leaseId: a.leaseId } });
      track(run(lease, a, a.token));
    },
    cancel(_shard, c) {
      const lease = leases.get(c.leaseId);
      if (!lease) return;
      log?.(`${c.leaseId}: cancelled by the pool${c.reason ? `: ${c.reason}` : ""}`);
      lease.abort.abort();
    },
    running(shard: number): Progress[] {
      return [...leases.values()].filter((l) => l.shard === shard).map((l) => ({ leaseId: l.id, phase: l.phase }) as Progress);
    },
    rejected(shard: number, why: string) {
      log?.(`shard ${shard}: ${why}`);
      refused(new Error(why));
    },
  };

  function connect(shard: number) {
    const c = new PoolConnection(options.url, options.token, shard, () => ({
      runnerId: options.id,
      slots: options.slots,
      properties: options.properties,
      version: RUNNER_VERSION,
      runningLeaseIds: [...leases.values()].filter((l) => l.shard === shard).map((l) => l.id),
    }), handlers);
    shards.set(shard, c);
    c.start();
  }

  const close = async () => {
    closing = true;
    stopping.abort();
    for (const lease of leases.values()) {
      lease.shutdown = true;
      lease.abort.abort();
    }
    for (const c of shards.values()) c.close();
    while (inflight.size > 0) await Promise.all([...inflight]);
  };

  connect(0);
  try {
    await ready;
  } catch (e) {
    await close();
    throw e;
  }
  log?.(`${options.id} connected to ${options.url}: ${options.slots} slot(s), sandbox ${sandbox.kind}${root ? `, actions as uid ${options.actionUid}+slot` : ""}`);
  return { id: options.id, sandbox: sandbox.kind, close };
}
