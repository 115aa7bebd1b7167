// google.api.http path templates ("/v2/{instance_name=**}/blobs/{digest.hash}:getTree") compiled
// to matchers that yield field-path -> value bindings.

export interface CompiledTemplate {
  regex: RegExp;
  fields: string[];
}

/**
 * `{f}` matches one segment, `{f=**}` any number (also none, so the empty instance name works
 * both as "/v2//blobs" and "/v2/blobs"), `{f=operations/**}` a literal-prefixed rest.
 */
export function compileTemplate(template: string): CompiledTemplate {
  const fields: string[] = [];
  let src = "";
  const re = /\{([^}=]+)(?:=([^}]*))?\}/g;
  let last = 0;
  for (let m = re.exec(template); m; m = re.exec(template)) {
    let literal = escape(template.slice(last, m.index));
    const after = template[m.index + m[0].length];
    const pattern = m[2] ?? "*";
    fields.push(m[1]!);
    if (pattern === "**" && literal.endsWith("/") && after === "/") {
      // "/{x=**}/" : the whole "x/" part may be absent.
      src += literal + "(?:(.+?)/|/?)";
      last = m.index + m[0].length + 1;
      continue;
    }
    src += literal + "(" + segmentPattern(pattern) + ")";
    last = m.index + m[0].length;
  }
  src += escape(template.slice(last));
  return { regex: new RegExp("^" + src + "$"), fields };
}

function segmentPattern(p: string): string {
  return p
    .split("/")
    .map((seg) => (seg === "**" ? ".+?" : seg === "*" ? "[^/]+" : escape(seg)))
    .join("/");
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export function matchTemplate(t: CompiledTemplate, path: string): Map<string, string> | null {
  const m = t.regex.exec(path);
  if (!m) return null;
  const out = new Map<string, string>();
  try {
    t.fields.forEach((f, i) => out.set(f, m[i + 1] === undefined ? "" : decodeURIComponent(m[i + 1]!)));
  } catch {
    return null; // malformed percent-encoding: not a route of ours
  }
  return out;
}
