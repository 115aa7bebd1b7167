// RequestMetadata, the header REAPI clients send on every call
// (`build.bazel.remote.execution.v2.requestmetadata-bin`, a base64 binary proto): which tool
// invocation, target and action a call belongs to. Kiln keeps it on each operation so a build's
// actions can be listed by its invocation id (ListOperations filter tool_invocation_id=...),
// the join key to the build's ResultStore invocation.
import { fromBinary } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { RequestMetadataSchema } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";

export const REQUEST_METADATA_HEADER = "build.bazel.remote.execution.v2.requestmetadata-bin";

export interface CallOrigin {
  /** tool_details.tool_name, e.g. "bazel". */
  toolName: string;
  toolInvocationId: string;
  targetId: string;
  actionMnemonic: string;
}

const clip = (s: string) => s.slice(0, 256);

/** What the header says, or empty strings when it is absent or malformed (it is advisory). */
export function callOrigin(headers: Headers): CallOrigin {
  const raw = headers.get(REQUEST_METADATA_HEADER);
  const none = { toolName: "", toolInvocationId: "", targetId: "", actionMnemonic: "" };
  if (!raw) return none;
  try {
    const m = fromBinary(RequestMetadataSchema, base64Decode(raw.split(",")[0]!.trim()));
    return { toolName: clip(m.toolDetails?.toolName ?? ""), toolInvocationId: clip(m.toolInvocationId), targetId: clip(m.targetId), actionMnemonic: clip(m.actionMnemonic) };
  } catch {
    return none;
  }
}
