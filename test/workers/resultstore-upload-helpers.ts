// Helpers for the ResultStoreUpload tests: a Connect client, fresh invocations, and a look into
// the invocation's Durable Object to see what was stored.
import { env, runInDurableObject } from "cloudflare:test";
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { ResultStoreUpload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { connectClient } from "./helpers.ts";

export const upload = connectClient(ResultStoreUpload);

export const uuid = () => crypto.randomUUID();

/** A new invocation with a token; returns its id, name and token. */
export async function newInvocation(extra: Record<string, unknown> = {}) {
  const id = uuid();
  const token = uuid();
  const inv = await upload.createInvocation({ invocationId: id, authorizationToken: token, invocation: {}, ...extra });
  return { id, token, name: inv.name };
}

const stubOf = (invocationId: string, tenant = "default") => env.INVOCATION.get(env.INVOCATION.idFromName(`${tenant}\n${invocationId}`));
export const invocationStub = stubOf;

/** The stored resource (decoded), or null. */
export async function stored<D extends DescMessage>(schema: D, invocationId: string, name: string): Promise<MessageShape<D> | null> {
  return runInDurableObject(stubOf(invocationId), (_o, state) => {
    const row = state.storage.sql.exec<{ data: ArrayBuffer }>(`SELECT data FROM resources WHERE name = ?`, name).toArray()[0];
    return row ? fromBinary(schema, new Uint8Array(row.data)) : null;
  }) as Promise<MessageShape<D> | null>;
}

export async function resourceCount(invocationId: string): Promise<number> {
  return runInDurableObject(stubOf(invocationId), (_o, state) => state.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM resources`).one().n);
}

export async function metaOf(invocationId: string, key: string): Promise<unknown> {
  return runInDurableObject(stubOf(invocationId), (_o, state) => state.storage.sql.exec<{ v: SqlStorageValue }>(`SELECT v FROM meta WHERE k = ?`, key).toArray()[0]?.v);
}

export async function alarmOf(invocationId: string): Promise<number | null> {
  return runInDurableObject(stubOf(invocationId), (_o, state) => state.storage.getAlarm());
}
