// Kiln's web UI: a single-page app over Kiln's public APIs (see api.ts). Routes:
//   /                                        invocations search
//   /invocations/{id}                        an invocation (--bes_results_url lands here)
//   /actions/{instance...}/{hash}/{size}     an action, its command, inputs and cached result
//   /operations                              execution operations, live
//   /cas[/{instance...}/{hash}/{size}?as=…]  any CAS digest as Directory, Tree, Action, Command, raw
import { render } from "preact";
import { useState } from "preact/hooks";
import { apiKey } from "./api.ts";
import { ActionPage } from "./pages/action.tsx";
import { CasPage } from "./pages/cas.tsx";
import { InvocationPage } from "./pages/invocation.tsx";
import { InvocationsPage } from "./pages/invocations.tsx";
import { OperationsPage } from "./pages/operations.tsx";
import { Link, parseDigestPath, useLocation } from "./router.tsx";

function Page({ url }: { url: URL }) {
  const path = url.pathname;
  let m: RegExpExecArray | null;
  if (path === "/" || path === "/invocations" || path === "/invocations/") return <InvocationsPage key={url.search} url={url} />;
  if ((m = /^\/invocations\/([^/]+)\/?$/.exec(path))) return <InvocationPage key={m[1]} id={decodeURIComponent(m[1]!)} url={url} />;
  if (path.startsWith("/actions/")) {
    const d = parseDigestPath(path.slice("/actions/".length));
    if (d) return <ActionPage key={path} instance={d.instance} digest={{ hash: d.hash, sizeBytes: d.size } as never} />;
  }
  if (path === "/operations" || path === "/operations/") return <OperationsPage url={url} />;
  if (path === "/cas" || path === "/cas/") return <CasPage target={null} url={url} />;
  if (path.startsWith("/cas/")) {
    const d = parseDigestPath(path.slice("/cas/".length));
    if (d) return <CasPage key={path} target={{ instance: d.instance, digest: { hash: d.hash, sizeBytes: d.size } as never }} url={url} />;
  }
  return (
    <section>
      <h1>Not found</h1>
      <p>
        Nothing here: <code>{path}</code>. Try the <Link href="/">invocations</Link>.
      </p>
    </section>
  );
}

function ApiKey() {
  const [key, setKey] = useState(apiKey.get());
  const [saved, setSaved] = useState(key !== "");
  const save = (e: Event) => {
    e.preventDefault();
    apiKey.set(key.trim());
    setSaved(key.trim() !== "");
    // every view reloads with the new key
    location.reload();
  };
  return (
    <form class="api-key" onSubmit={save}>
      <label>
        API key{" "}
        <input type="password" autoComplete="off" value={key} onInput={(e) => setKey((e.currentTarget as HTMLInputElement).value)} placeholder={saved ? "" : "none"} />
      </label>
      <button type="submit">{key.trim() === "" && saved ? "Forget" : "Use"}</button>
      <span class="muted">{saved ? "kept for this tab only" : ""}</span>
    </form>
  );
}

function App() {
  const url = useLocation();
  const section = url.pathname.split("/")[1] || "invocations";
  return (
    <>
      <header>
        <Link class="brand" href="/">
          Kiln
        </Link>
        <nav aria-label="main">
          <Link href="/" aria-current={section === "invocations" ? "page" : undefined}>
            Invocations
          </Link>
          <Link href="/operations" aria-current={section === "operations" ? "page" : undefined}>
            Operations
          </Link>
          <Link href="/cas" aria-current={section === "cas" ? "page" : undefined}>
            CAS
          </Link>
        </nav>
        <ApiKey />
      </header>
      <main>
        <Page url={url} />
      </main>
    </>
  );
}

const root = document.getElementById("app")!;
root.textContent = ""; // the static "Loading…"
render(<App />, root);
