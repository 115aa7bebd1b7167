// RunnerContainer: the deployed executor. Each instance is a container built from
// container/Dockerfile running the same runner program as local HTTP runners, listening on 8080.
// Local dev and tests never construct it (RUNNER_URLS takes precedence): without Docker the
// Container base class refuses to start, which is why the choice is made at the call site
// (src/execution/runners.ts) rather than inside this class.
import { Container } from "@cloudflare/containers";

export class RunnerContainer extends Container {
  defaultPort = 8080;
  /** Idle containers stop after this long; the next action starts one again. */
  sleepAfter = "10m";
}
