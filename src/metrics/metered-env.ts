// The worker's bindings with their billed operations counted: R2 calls by class (Class A: writes,
// lists and multipart steps; Class B: reads and heads; deletes and aborts are free, per R2's price
// list) and every call on a Durable Object stub (each RPC call or fetch is one billed request).
// Proxies, not re-implementations: each call goes to the real binding unchanged.
import type { Env } from "../env.ts";
import { tally } from "./request-tally.ts";

type R2Class = "A" | "B" | "free";
const BUCKET_OPS: Record<string, R2Class> = { put: "A", list: "A", createMultipartUpload: "A", get: "B", head: "B", delete: "free" };
const MULTIPART_OPS: Record<string, R2Class> = { uploadPart: "A", complete: "A", abort: "free" };

const r2 = (cls: R2Class, op: string) => tally("kiln_r2_operations_total", { class: cls, op });

/** Calls go to `target` itself (native bindings refuse a proxy as `this`). */
function wrapMethods<T extends object>(target: T, onCall: (name: string) => void, wrapResult?: (name: string, v: unknown) => unknown): T {
  return new Proxy(target, {
    get(t, prop) {
      const v = Reflect.get(t, prop);
      if (typeof prop !== "string" || typeof v !== "function" || prop === "then") return v;
      return (...args: unknown[]) => {
        onCall(prop);
        const out = Reflect.apply(v, t, args);
        return wrapResult ? wrapResult(prop, out) : out;
      };
    },
  });
}

const meteredMultipart = (u: R2MultipartUpload) => wrapMethods(u, (op) => MULTIPART_OPS[op] && r2(MULTIPART_OPS[op], op));

function meteredBucket(bucket: R2Bucket): R2Bucket {
  return wrapMethods(
    bucket,
    (op) => BUCKET_OPS[op] && r2(BUCKET_OPS[op], op),
    (op, out) =>
      op === "createMultipartUpload" ? (out as Promise<R2MultipartUpload>).then(meteredMultipart) : op === "resumeMultipartUpload" ? meteredMultipart(out as R2MultipartUpload) : out,
  );
}

/** Stub members that are not calls to the object. */
const STUB_FIELDS = new Set(["id", "name", "then", "dup", "constructor"]);

function meteredNamespace(binding: string, ns: DurableObjectNamespace): DurableObjectNamespace {
  const stub = (s: DurableObjectStub) =>
    new Proxy(s, {
      get(t, prop) {
        const v = Reflect.get(t, prop);
        if (typeof prop !== "string" || STUB_FIELDS.has(prop) || typeof v !== "function") return v;
        return (...args: unknown[]) => {
          tally("kiln_do_requests_total", { object: binding, method: prop });
          // Reflect.apply: an RPC method is a stub itself, whose .apply would be a remote call.
          return Reflect.apply(v, t, args);
        };
      },
    });
  return wrapMethods(ns, () => {}, (op, out) => (op === "get" || op === "getByName" ? stub(out as DurableObjectStub) : out));
}

const cache = new WeakMap<object, Env>();

/** `env` with its R2 bucket and Durable Object namespaces counted; the same object each time. */
export function metered(env: Env): Env {
  let m = cache.get(env);
  if (m) return m;
  const wrapped = new Map<string | symbol, unknown>();
  m = new Proxy(env, {
    get(t, prop) {
      const v = Reflect.get(t, prop);
      if (typeof prop !== "string" || typeof v !== "object" || v === null) return v;
      const seen = wrapped.get(prop);
      if (seen && (seen as { raw: unknown }).raw === v) return (seen as { proxy: unknown }).proxy;
      let proxy: unknown = v;
      if ("createMultipartUpload" in v) proxy = meteredBucket(v as R2Bucket);
      else if ("idFromName" in v) proxy = meteredNamespace(prop, v as DurableObjectNamespace);
      wrapped.set(prop, { raw: v, proxy });
      return proxy;
    },
  });
  cache.set(env, m);
  return m;
}
