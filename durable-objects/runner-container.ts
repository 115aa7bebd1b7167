// RunnerContainer: the deployed source of runners. Each instance is a container built from
// container/Dockerfile running `kiln runner`, which dials the worker's pool with the token given
// here (the container listens on no port). Local dev and tests never construct it: without
// Docker the Container base class refuses to start, and runners there are plain processes.
import { Container } from "@cloudflare/containers";

export class RunnerContainer extends Container {
  /** Idle containers stop after this long; the pool starts them again when work waits. */
  sleepAfter = "10m";

  /** Starts the container if it is not running, pointed at the pool. */
  async wake(url: string, token: string): Promise<void> {
    if (this.ctx.container?.running) return;
    await this.start({ envVars: { KILN_URL: url, KILN_RUNNER_TOKEN: token } });
  }
}
