// SQL access to one invocation's storage (the schema is in durable-objects/invocation.ts): the
// resources table shared with the download side, invocation-level meta, the last request id per
// resource, and the names whose search-index rows are still to be written.
import { invalidArgument } from "../errors.ts";
import { nameOf, type ResourceKey } from "./names.ts";

export interface ResourceRow {
  kind: string;
  finalized: boolean;
  data: Uint8Array;
}

/**
 * A Durable Object's SQLite holds at most 2 MB per row; a resource must fit with its name and ids.
 * Larger resources are refused as bad input rather than failing inside SQLite.
 */
export const MAX_RESOURCE_BYTES = 2_000_000 - 16 * 1024;

function checkSize(k: ResourceKey, data: Uint8Array): void {
  if (data.byteLength > MAX_RESOURCE_BYTES) {
    throw invalidArgument(`${k.kind} "${nameOf(k)}" would be ${data.byteLength} bytes; a resource may be at most ${MAX_RESOURCE_BYTES} bytes`);
  }
}

/** Kinds the cross-invocation search index holds (SearchInvocations, SearchConfiguredTargets, …). */
const INDEXED = new Set(["invocation", "target", "configuration", "configuredTarget"]);

export class ResourceTable {
  private seq: number;
  /** index_pending versions: increasing, so a flush in flight never dequeues a newer change. */
  private ver: number;

  constructor(private readonly sql: SqlStorage) {
    this.seq = this.sql.exec<{ m: number | null }>(`SELECT max(seq) AS m FROM resources`).one().m ?? 0;
    this.ver = this.sql.exec<{ m: number | null }>(`SELECT max(ver) AS m FROM index_pending`).one().m ?? 0;
  }

  /** After the object's storage was wiped (DeleteInvocation). */
  reset(): void {
    this.seq = 0;
  }

  get(k: ResourceKey): ResourceRow | null {
    const row = this.sql
      .exec<{ kind: string; finalized: number; data: ArrayBuffer }>(`SELECT kind, finalized, data FROM resources WHERE name = ?`, nameOf(k))
      .toArray()[0];
    return row ? { kind: row.kind, finalized: row.finalized !== 0, data: new Uint8Array(row.data) } : null;
  }

  insert(k: ResourceKey, data: Uint8Array): void {
    checkSize(k, data);
    this.sql.exec(
      `INSERT INTO resources (name, kind, target_id, config_id, action_id, file_set_id, seq, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      nameOf(k),
      k.kind,
      k.targetId,
      k.configId,
      k.actionId,
      k.fileSetId,
      ++this.seq,
      data,
    );
    this.dirty(k);
  }

  replace(k: ResourceKey, data: Uint8Array): void {
    checkSize(k, data);
    this.sql.exec(`UPDATE resources SET data = ? WHERE name = ?`, data, nameOf(k));
    this.dirty(k);
  }

  finalize(k: ResourceKey): void {
    this.sql.exec(`UPDATE resources SET finalized = 1 WHERE name = ?`, nameOf(k));
  }

  /** Once the invocation is finalized, so is everything in it. */
  finalizeAll(): void {
    this.sql.exec(`UPDATE resources SET finalized = 1`);
  }

  lastRequestId(k: ResourceKey): string {
    return this.sql.exec<{ request_id: string }>(`SELECT request_id FROM request_ids WHERE name = ?`, nameOf(k)).toArray()[0]?.request_id ?? "";
  }

  /** Records the request id of the latest successful operation on a resource ("" for none). */
  setRequestId(k: ResourceKey, requestId: string): void {
    if (requestId) this.sql.exec(`INSERT OR REPLACE INTO request_ids (name, request_id) VALUES (?, ?)`, nameOf(k), requestId);
    else this.sql.exec(`DELETE FROM request_ids WHERE name = ?`, nameOf(k));
  }

  meta<T extends string | number | ArrayBuffer>(k: string): T | undefined {
    return (this.sql.exec<{ v: T }>(`SELECT v FROM meta WHERE k = ?`, k).toArray()[0]?.v ?? undefined) as T | undefined;
  }

  setMeta(k: string, v: string | number | Uint8Array): void {
    this.sql.exec(`INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)`, k, v);
  }

  /** Queues the resource's search-index row for writing (see index-sync.ts). */
  dirty(k: ResourceKey): void {
    if (!INDEXED.has(k.kind)) return;
    this.sql.exec(
      `INSERT INTO index_pending (name, kind, ver) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET ver = excluded.ver`,
      nameOf(k),
      k.kind,
      ++this.ver,
    );
  }
}
