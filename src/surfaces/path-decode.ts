// Percent-decoding of request paths. decodeURIComponent throws a URIError on a malformed escape
// ("%ZZ", a lone "%", an escape that is not UTF-8); that is the client's fault, so it becomes
// INVALID_ARGUMENT here instead of reaching the worker's error handler as a 500.
import { invalidArgument } from "../errors.ts";

/** Decodes one path (or segment); INVALID_ARGUMENT naming `field` when it is not valid %-encoding. */
export function decodePath(raw: string, field = "path"): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw invalidArgument(`${field} "${raw.slice(0, 200)}" is not valid %-encoding`, field);
  }
}

/** Decodes for route matching only: an undecodable path is matched as it is (and refused later). */
export function decodeForMatch(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}
