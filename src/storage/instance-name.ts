import { invalidArgument } from "../errors.ts";

/** Path segments REAPI reserves: they cannot appear inside an instance name. */
export const RESERVED_SEGMENTS = new Set([
  "blobs",
  "uploads",
  "actions",
  "actionResults",
  "operations",
  "capabilities",
  "compressed-blobs",
]);

const SEGMENT = /^[A-Za-z0-9._~+=@-]+$/;

/** Validates an instance name: "" or slash-separated segments, none reserved, no empty segment. */
export function parseInstanceName(name: string, field = "instance_name"): string {
  if (name === "") return name;
  if (name.length > 512) throw invalidArgument(`${field} is longer than 512 characters`, field);
  for (const seg of name.split("/")) {
    if (seg === "") throw invalidArgument(`${field} "${name}" has an empty path segment`, field);
    if (RESERVED_SEGMENTS.has(seg)) throw invalidArgument(`${field} "${name}" uses the reserved segment "${seg}"`, field);
    if (!SEGMENT.test(seg) || seg === "." || seg === "..") {
      throw invalidArgument(`${field} "${name}" has an invalid segment "${seg.slice(0, 40)}"`, field);
    }
  }
  return name;
}
