// The six ResultStore resource messages by kind: their schemas, and the name and id the server
// assigns (a client's own name and id fields are always overwritten).
import { create, type DescMessage, type Message } from "@bufbuild/protobuf";
import { ActionSchema, Action_IdSchema } from "../gen/google/devtools/resultstore/v2/action_pb.ts";
import { ConfigurationSchema, Configuration_IdSchema } from "../gen/google/devtools/resultstore/v2/configuration_pb.ts";
import { ConfiguredTargetSchema, ConfiguredTarget_IdSchema } from "../gen/google/devtools/resultstore/v2/configured_target_pb.ts";
import { FileSetSchema, FileSet_IdSchema } from "../gen/google/devtools/resultstore/v2/file_set_pb.ts";
import { InvocationSchema, Invocation_IdSchema } from "../gen/google/devtools/resultstore/v2/invocation_pb.ts";
import { TargetSchema, Target_IdSchema } from "../gen/google/devtools/resultstore/v2/target_pb.ts";
import { nameOf, type ResourceKey, type ResourceKind } from "./names.ts";

export const schemaOf: Record<ResourceKind, DescMessage> = {
  invocation: InvocationSchema,
  target: TargetSchema,
  configuration: ConfigurationSchema,
  configuredTarget: ConfiguredTargetSchema,
  action: ActionSchema,
  fileSet: FileSetSchema,
};

/** A resource message as stored: any of the six, with name and id set. */
export type Resource = Message & { name: string; id?: unknown };

/** The resource's Id message (Invocation.Id, Target.Id, …) for a key. */
export function idOf(k: ResourceKey): Message {
  switch (k.kind) {
    case "invocation":
      return create(Invocation_IdSchema, { invocationId: k.invocationId });
    case "target":
      return create(Target_IdSchema, { invocationId: k.invocationId, targetId: k.targetId });
    case "configuration":
      return create(Configuration_IdSchema, { invocationId: k.invocationId, configurationId: k.configId });
    case "configuredTarget":
      return create(ConfiguredTarget_IdSchema, { invocationId: k.invocationId, targetId: k.targetId, configurationId: k.configId });
    case "action":
      return create(Action_IdSchema, { invocationId: k.invocationId, targetId: k.targetId, configurationId: k.configId, actionId: k.actionId });
    case "fileSet":
      return create(FileSet_IdSchema, { invocationId: k.invocationId, fileSetId: k.fileSetId });
  }
}

/** Stamps the server-derived name and id onto a resource message. */
export function stamp<T extends Resource>(k: ResourceKey, msg: T): T {
  (msg as Resource).name = nameOf(k);
  (msg as Resource).id = idOf(k);
  return msg;
}

/** What every upload RPC answers: a resource with only name and id. */
export function nameAndId(k: ResourceKey): Resource {
  return stamp(k, create(schemaOf[k.kind]) as Resource);
}
