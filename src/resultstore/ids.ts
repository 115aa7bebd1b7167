// What the upload API accepts as ids, request ids and tokens (resultstore_upload.proto).
import { invalidArgument } from "../errors.ts";
import type { ResourceKey } from "./names.ts";

/** RFC 4122 UUID of version 3, 4 or 5 (the variant bits 10xx). */
const UUID_345 = /^[0-9a-f]{8}-[0-9a-f]{4}-[345][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

export const isUuid345 = (s: string) => UUID_345.test(s);

/** Ids of configurations, configured targets, actions and file sets: "[a-zA-Z0-9_-]", up to 512. */
const SIMPLE_ID = /^[A-Za-z0-9_-]{1,512}$/;

const codePoints = (s: string) => [...s].length;

export function checkInvocationId(id: string, field = "invocation_id"): string {
  if (!isUuid345(id)) throw invalidArgument(`invocation id "${id}" must be an RFC 4122 v3, v4 or v5 UUID`, field);
  // One spelling per invocation: the DO key and the name use the lowercase form.
  return id.toLowerCase();
}

export function checkRequestId(id: string): void {
  if (codePoints(id) > 36) throw invalidArgument("request_id is restricted to 36 characters", "request_id");
}

export function checkAuthorizationToken(token: string): void {
  if (!isUuid345(token)) throw invalidArgument("authorization_token must be an RFC 4122 v3, v4 or v5 UUID", "authorization_token");
}

/** Web-safe base64 (RFC 4648 §5), padding optional; the empty string is not a token. */
export function checkResumeToken(token: string, field: string): void {
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(token) || token.replace(/=+$/, "").length % 4 === 1) {
    throw invalidArgument(`${field} must be non-empty web-safe base64`, field);
  }
}

/** Validates the child ids of a key (the invocation id is checked where it is routed). */
export function checkChildIds(k: ResourceKey): void {
  const simple = (id: string, field: string) => {
    if (id === "-") throw invalidArgument(`"-" is a reserved id`, field);
    if (!SIMPLE_ID.test(id)) throw invalidArgument(`${field} "${id}" must be 1 to 512 characters of [a-zA-Z0-9_-]`, field);
  };
  if (k.kind === "target" || k.kind === "configuredTarget" || k.kind === "action") {
    if (!k.targetId) throw invalidArgument("a target id is required", "target_id");
    if (k.targetId === "-") throw invalidArgument(`"-" is a reserved id`, "target_id");
    if (codePoints(k.targetId) > 1024) throw invalidArgument("target_id is limited to 1024 characters", "target_id");
  }
  if (k.kind === "configuration" || k.kind === "configuredTarget" || k.kind === "action") simple(k.configId, "config_id");
  if (k.kind === "action") simple(k.actionId, "action_id");
  if (k.kind === "fileSet") simple(k.fileSetId, "file_set_id");
}

/** uploader_state is opaque to us but bounded, as the proto says. */
const MAX_UPLOADER_STATE = 1024 * 1024;

export function checkUploaderState(state: Uint8Array): void {
  if (state.byteLength > MAX_UPLOADER_STATE) throw invalidArgument("uploader_state is limited to 1 MiB", "uploader_state");
}
