// Client-side routing over the History API: real <a href> links (open in a new tab, keyboard,
// copy link all work), intercepted for same-page navigation.
import type { AnchorHTMLAttributes, ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

const listeners = new Set<() => void>();
const notify = () => listeners.forEach((l) => l());
addEventListener("popstate", notify);

export function navigate(href: string, replace = false) {
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  notify();
}

/** The current URL; re-renders the caller on navigation. */
export function useLocation(): URL {
  const [, tick] = useState(0);
  useEffect(() => {
    const l = () => tick((n) => n + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return new URL(location.href);
}

type AnchorProps = AnchorHTMLAttributes<HTMLAnchorElement> & { href: string; children?: ComponentChildren };

export function Link(props: AnchorProps) {
  const onClick = (e: MouseEvent) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    // a new page starts at its top; the same page with other parameters (a target picked) stays put
    const samePage = new URL(props.href, location.href).pathname === location.pathname;
    navigate(props.href);
    if (!samePage) scrollTo(0, 0);
  };
  return <a {...props} onClick={onClick} />;
}

/** `/actions/{instance...}/{hash}/{size}` style paths: the instance may hold slashes or be empty. */
export function parseDigestPath(rest: string): { instance: string; hash: string; size: bigint } | null {
  const parts = rest.split("/").filter((p) => p !== "").map(decodeURIComponent);
  if (parts.length < 2) return null;
  const size = parts.pop()!;
  const hash = parts.pop()!;
  if (!/^[0-9a-f]{64}$/.test(hash) || !/^[0-9]{1,19}$/.test(size)) return null;
  return { instance: parts.join("/"), hash, size: BigInt(size) };
}

export const digestPath = (prefix: string, instance: string, d: { hash: string; sizeBytes: bigint }) =>
  `/${prefix}/${instance ? instance.split("/").map(encodeURIComponent).join("/") + "/" : ""}${d.hash}/${d.sizeBytes}`;
