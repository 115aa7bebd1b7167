// Durable Object classes as exported by the worker: the same class, with its env metered (the R2
// and object calls it makes are counted as internal work) and the requests it gets without a
// caller stub counted too: alarms, and WebSocket messages (billed at 20 messages to a request).
// Calls through stubs are counted by the caller (metered-env.ts), where the request kind is known.
import type { DurableObject } from "cloudflare:workers";
import type { Env } from "../env.ts";
import { metered } from "./metered-env.ts";
import { tally } from "./request-tally.ts";

type ObjectClass = new (ctx: DurableObjectState, env: Env) => DurableObject<Env>;
const EVENTS = ["alarm", "webSocketMessage"] as const;

export function meteredObject<C extends ObjectClass>(cls: C, binding: string): C {
  const Metered = class extends (cls as ObjectClass) {
    constructor(ctx: DurableObjectState, env: Env) {
      super(ctx, metered(env));
    }
  };
  for (const event of EVENTS) {
    const handler = (cls.prototype as Record<string, unknown>)[event];
    if (typeof handler !== "function") continue;
    Object.defineProperty(Metered.prototype, event, {
      value(this: unknown, ...args: unknown[]) {
        tally("kiln_do_requests_total", { object: binding, method: event });
        return Reflect.apply(handler, this, args);
      },
    });
  }
  Object.defineProperty(Metered, "name", { value: cls.name });
  return Metered as unknown as C;
}
