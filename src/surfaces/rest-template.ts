// google.api.http path templates ("/v2/{instance_name=**}/blobs/{digest.hash}:getTree") compiled
// to matchers that yield field-path -> value bindings.

export interface CompiledTemplate {
  regex: RegExp;
  fields: string[];
  /** Per field: does its pattern span several segments ("**", "invocations/*")? */
  multi: boolean[];
}

/**
 * `{f}` matches one segment, `{f=**}` any number (also none, so the empty instance name works
 * both as "/v2//blobs" and "/v2/blobs"), `{f=operations/**}` a literal-prefixed rest.
 */
export function compileTemplate(template: string): CompiledTemplate {
  const fields: string[] = [];
  const multi: boolean[] = [];
  let src = "";
  const re = /\{([^}=]+)(?:=([^}]*))?\}/g;
  let last = 0;
  for (let m = re.exec(template); m; m = re.exec(template)) {
    let literal = escape(template.slice(last, m.index));
    const after = template[m.index + m[0].length];
    const pattern = m[2] ?? "*";
    fields.push(m[1]!);
    multi.push(pattern.includes("/") || pattern.includes("**"));
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
  return { regex: new RegExp("^" + src + "$"), fields, multi };
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
    t.fields.forEach((f, i) => out.set(f, m[i + 1] === undefined ? "" : decodeVariable(m[i + 1]!, t.multi[i]!)));
  } catch {
    return null; // malformed percent-encoding: not a route of ours
  }
  return out;
}

/**
 * google.api.http: a multi-segment variable is decoded except for "%2F", which stays encoded, so a
 * resource name's url-encoded ids ("invocations/x/targets/%2F%2Fpkg%3At") keep their slashes apart
 * from the name's own.
 */
function decodeVariable(raw: string, multi: boolean): string {
  return multi ? raw.split(/%2F/i).map(decodeURIComponent).join("%2F") : decodeURIComponent(raw);
}
