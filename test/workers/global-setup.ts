// Starts the scripted runner stand-in (runner-stand-in.ts) on its fixed loopback port for the
// whole workerd test run; vitest.config.mts points RUNNER_URLS at it.
import { startStandIn } from "./runner-stand-in.ts";

export default async function setup() {
  const standIn = await startStandIn();
  return () => standIn.close();
}
