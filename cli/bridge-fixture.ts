// For the bridge's specs: a stand-in worker (any node:http or node:https server) on a free port,
// the real bridge in front of it, and a grpc-js client of the bridge; all stopped by close().
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { startBridge, type Bridge, type BridgeOptions } from "./bridge.ts";

export interface BridgeFixture {
  bridge: Bridge;
  client: grpc.Client;
  close(): Promise<void>;
}

export async function bridgeInFront(worker: Server, scheme: "http" | "https", opts: Partial<BridgeOptions> = {}): Promise<BridgeFixture> {
  await new Promise<void>((resolve) => worker.listen(0, "127.0.0.1", resolve));
  const upstream = `${scheme}://127.0.0.1:${(worker.address() as AddressInfo).port}`;
  const bridge = await startBridge({ log: () => {}, ...opts, upstream, port: 0 });
  const client = new grpc.Client(`127.0.0.1:${bridge.port}`, grpc.credentials.createInsecure());
  return {
    bridge,
    client,
    async close() {
      client.close();
      await bridge.close();
      worker.close();
    },
  };
}
