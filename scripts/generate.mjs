// Generates src/gen/ from proto/ (ours) and the googleapis protos shipped by google-proto-files.
// Runs on postinstall so a fresh clone builds and tests with no manual step.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const g = "node_modules/google-proto-files/google";
const paths = [
  "proto/build",
  "proto/kiln",
  // Bazel's Build Event Protocol; its imports (command line, failure details, …) come along.
  "proto/bep/src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto",
  `${g}/bytestream`,
  `${g}/longrunning`,
  `${g}/rpc/error_details.proto`,
  `${g}/devtools/resultstore/v2`,
  `${g}/devtools/build/v1`,
];
const bin = join(root, "node_modules", ".bin");
execFileSync(join(bin, "buf"), ["generate", ...paths.flatMap((p) => ["--path", p])], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
});
