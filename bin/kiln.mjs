#!/usr/bin/env node
// `npx kiln …` from a checkout or an installed package: the command is TypeScript (cli/kiln.ts),
// which tsx's loader runs as it is, with no build step.
import { register } from "tsx/esm/api";

register();
await import("../cli/kiln.ts");
