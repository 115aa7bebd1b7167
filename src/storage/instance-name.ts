// Instance names: parsed and checked in one place shared with the bridge and the runner.
export { RESERVED_SEGMENTS, parseInstanceName } from "../shared/resource-names.ts";
