// Reading CAS blobs through ByteStream Read (streamed; a limit keeps big blobs out of memory).
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { Digest } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { byteStream } from "./api.ts";

export type DigestLike = Pick<Digest, "hash" | "sizeBytes">;

export const resourceName = (instance: string, d: DigestLike) => `${instance ? instance + "/" : ""}blobs/${d.hash}/${d.sizeBytes}`;

/** Bytes [offset, offset+limit) of a blob (or a live log stream, by its name). */
export async function readBytes(name: string, offset = 0n, limit = 0n, signal?: AbortSignal): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const res of byteStream.read({ resourceName: name, readOffset: offset, readLimit: limit }, { signal })) chunks.push(res.data);
  return concat(chunks);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Messages (Action, Command, Directory, Tree) are read whole, up to this size. */
const MAX_MESSAGE = 16n * 1024n * 1024n;

export async function readMessage<D extends DescMessage>(schema: D, instance: string, d: DigestLike): Promise<MessageShape<D>> {
  if (d.sizeBytes > MAX_MESSAGE) throw new Error(`${d.hash}/${d.sizeBytes} is too large to show as a ${schema.name}`);
  return fromBinary(schema, await readBytes(resourceName(instance, d)));
}

/** The blob HTTP surface's URL, for downloads. */
export const blobUrl = (instance: string, d: DigestLike) => `/${instance ? instance.split("/").map(encodeURIComponent).join("/") + "/" : ""}blobs/${d.hash}/${d.sizeBytes}`;
