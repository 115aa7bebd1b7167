// Starts the scripted HTTP origin (test/asset-origin.ts) for the Remote Asset tests in workerd,
// which fetch it over the loopback network as Kiln would fetch any origin.
import type { TestProject } from "vitest/node";
import { startAssetOrigin } from "../asset-origin.ts";

declare module "vitest" {
  export interface ProvidedContext {
    assetOrigin: string;
    /** The same origin server on another port: another origin, for cross-origin redirects. */
    assetOtherOrigin: string;
  }
}

export default async function setup(project: TestProject) {
  const origin = await startAssetOrigin();
  project.provide("assetOrigin", origin.url);
  project.provide("assetOtherOrigin", origin.otherUrl);
  return () => origin.close();
}
