// Where action-cache entries live in R2: one object per (tenant, instance name, action hash).
import { toBinary } from "@bufbuild/protobuf";
import { ActionResultSchema, type ActionResult } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { invalidArgument } from "../errors.ts";

/** Largest serialized ActionResult we store (inline contents included). */
export const MAX_ACTION_RESULT_BYTES = 16 * 1024 * 1024;

export const actionResultKey = (tenant: string, instanceName: string, actionHash: string) =>
  `ac/${tenant}/${encodeURIComponent(instanceName)}/${actionHash}`;

export async function putActionResult(bucket: R2Bucket, key: string, result: ActionResult): Promise<void> {
  const bytes = toBinary(ActionResultSchema, result);
  if (bytes.byteLength > MAX_ACTION_RESULT_BYTES) {
    throw invalidArgument(`the action result is ${bytes.byteLength} bytes, over ${MAX_ACTION_RESULT_BYTES}`, "action_result");
  }
  await bucket.put(key, bytes);
}
