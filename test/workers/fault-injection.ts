// Faults injected into the bindings a storage path calls: the CAS index objects and the R2 bucket,
// each failing chosen calls before they reach their target, or after it has done its work (as if
// the answer were lost on the way back). Tests build a BlobStore over the returned env, or swap
// a binding of the worker's own env for its faulty one while a request runs.
import { env } from "cloudflare:test";
import type { Env } from "../../src/env.ts";

export type When = "before" | "after";

/** `base` whose CAS index stubs fail the named methods, or the calls `methods(name)` picks (see When). */
export function failingIndex(methods: string[] | ((method: string) => boolean), when: When, base: Env = env): Env {
  const fails = typeof methods === "function" ? methods : (m: string) => methods.includes(m);
  const ns = base.CAS_INDEX;
  const namespace = {
    idFromName: (name: string) => ns.idFromName(name),
    get: (id: DurableObjectId) => {
      const stub = ns.get(id) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
      return new Proxy(stub, {
        get: (_t, prop: string) => async (...args: unknown[]) => {
          if (!fails(prop)) return stub[prop]!(...args);
          if (when === "after") await stub[prop]!(...args);
          throw new Error(`injected: CAS index ${prop} failed ${when} reaching the shard`);
        },
      });
    },
  };
  return { ...base, CAS_INDEX: namespace } as unknown as Env;
}

/** `bucket` with each method call passed to `around`: its name, its key (first argument) and the call itself. */
export function aroundBucket(bucket: R2Bucket, around: (op: string, key: string, call: () => unknown) => unknown): R2Bucket {
  return new Proxy(bucket, {
    get(t, prop: string) {
      const v = Reflect.get(t, prop) as unknown;
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => around(prop, typeof args[0] === "string" ? args[0] : "", () => Reflect.apply(v, t, args));
    },
  });
}

/**
 * `base` whose R2 bucket fails the calls `fails(op, key)` picks (op: get, put, head, ..., and
 * uploadPart of a multipart upload, keyed by its object's key), as `when` says; a get failing
 * "after" hands over a body that breaks off after its first bytes, as a read cut off mid-way does.
 */
export function failingBucket(fails: (op: string, key: string) => boolean, when: When = "before", base: Env = env): Env {
  const proxy = aroundBucket(base.CAS, (prop, key, call) => {
    if (prop === "resumeMultipartUpload") return failingUpload(call() as R2MultipartUpload, fails, when);
    if (prop === "createMultipartUpload") return (call() as Promise<R2MultipartUpload>).then((u) => failingUpload(u, fails, when));
    if (!fails(prop, key)) return call();
    return inject(`R2 ${prop} of ${key}`, when, call, prop === "get" && when === "after");
  });
  return { ...base, CAS: proxy } as unknown as Env;
}

/** A multipart upload whose uploadPart and complete calls fail where `fails(op, its key)` says. */
function failingUpload(upload: R2MultipartUpload, fails: (op: string, key: string) => boolean, when: When): R2MultipartUpload {
  return new Proxy(upload, {
    get(t, prop: string) {
      const v = Reflect.get(t, prop) as unknown;
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        const call = () => Reflect.apply(v, t, args);
        if ((prop !== "uploadPart" && prop !== "complete") || !fails(prop, t.key)) return call();
        // "before" refuses the part without reading its stream, as R2 may.
        return inject(`R2 ${prop}${prop === "uploadPart" ? ` ${String(args[0])}` : ""} of ${t.key}`, when, call, false);
      };
    },
  });
}

/** The injected failure of `call`; a read (`breaksBody`) hands over a body that breaks off instead. */
async function inject(what: string, when: When, call: () => unknown, breaksBody: boolean): Promise<unknown> {
  const err = new Error(`injected: ${what} failed ${when} reaching R2`);
  if (breaksBody) {
    const obj = (await call()) as R2ObjectBody | null;
    if (!obj) return obj;
    // What readers use of an object (R2's own getters refuse any other `this`), its body breaking.
    const body = breakAfterFirstChunk(obj.body, err);
    const { key, size, etag, range, uploaded, customMetadata, httpMetadata } = obj;
    const read = () => new Response(body);
    return { key, size, etag, range, uploaded, customMetadata, httpMetadata, body, arrayBuffer: () => read().arrayBuffer(), text: () => read().text(), json: () => read().json() };
  }
  if (when === "after") await call();
  throw err;
}

function breakAfterFirstChunk(body: ReadableStream<Uint8Array>, err: Error): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let sent = false;
  return new ReadableStream({
    async pull(ctl) {
      if (sent) {
        await reader.cancel(err);
        return ctl.error(err);
      }
      const { value, done } = await reader.read();
      if (done) return ctl.error(err);
      sent = true;
      ctl.enqueue(value.subarray(0, Math.max(1, value.byteLength >> 1)));
    },
  });
}

/** Runs `fn` with one of the worker's own bindings taken from `faulty` (SELF serves from this same env). */
export async function withBinding<T>(name: "CAS" | "CAS_INDEX", faulty: Env, fn: () => Promise<T>): Promise<T> {
  const real = env[name];
  Object.assign(env, { [name]: faulty[name] });
  try {
    return await fn();
  } finally {
    Object.assign(env, { [name]: real });
  }
}

/**
 * `base` whose R2 calls `holds(op, key)` picks wait until `release()` (then run as asked);
 * `reached` resolves when the first of them is waiting. For interleavings: what else runs meanwhile.
 */
export function heldBucket(holds: (op: string, key: string) => boolean, base: Env = env): { env: Env; reached: Promise<void>; release: () => void } {
  let reach!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => (reach = r));
  const released = new Promise<void>((r) => (release = r));
  const proxy = aroundBucket(base.CAS, (prop, key, call) => {
    if (!holds(prop, key)) return call();
    reach();
    return released.then(call);
  });
  return { env: { ...base, CAS: proxy } as unknown as Env, reached, release };
}

/**
 * Runs `fn` with a Durable Object's R2 bucket taken from `faulty` (built on the object's own env,
 * which withBinding does not reach). Call it inside runInDurableObject, and make the object's calls
 * there too: a promise of the test's cannot be settled from the object's context, nor the reverse.
 */
export async function withObjectBucket<T>(o: object, faulty: (base: Env) => Env, fn: () => Promise<T>): Promise<T> {
  const e = (o as { env: Env }).env;
  const real = e.CAS;
  e.CAS = faulty({ ...e }).CAS;
  try {
    return await fn();
  } finally {
    e.CAS = real;
  }
}
