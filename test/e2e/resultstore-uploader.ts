// A ResultStore uploader as its own process (the load test kills it mid-upload):
//   tsx resultstore-uploader.ts <grpc target> <invocation name> <token> <targets>
// Resumes where the server says it is, prints one line per acknowledged batch, exits 0 when done.
import { resultStoreClients, uploadInvocation } from "./resultstore-load.ts";

const [target, invocation, token, total] = process.argv.slice(2);
const { upload, close } = resultStoreClients(target!);
try {
  const p = await uploadInvocation(upload, invocation!, token!, Number(total), (b) => console.log(`batch ${b.batches} next ${b.next}`));
  console.log(`done ${p.batches} batches ${p.resources} resources`);
} catch (e) {
  console.error(`upload failed: ${(e as Error).message}`);
  process.exitCode = 1;
} finally {
  close();
}
