// The ResultStore load: an invocation of N targets x 2 configured targets x 1 action, uploaded
// through UploadBatch in batches of at most 10 MiB, resumable from GetInvocationUploadMetadata
// (the stored resume token and uploader_state say how far the server got). Used by the e2e load
// test (through a child process that gets killed) and by bench/resultstore.ts.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const root = fileURLToPath(new URL("../../", import.meta.url));
const definition = protoLoader.loadSync(
  ["google/devtools/resultstore/v2/resultstore_upload.proto", "google/devtools/resultstore/v2/resultstore_download.proto"],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [`${root}node_modules/google-proto-files`] },
);
const rs = (grpc.loadPackageDefinition(definition) as any).google.devtools.resultstore.v2;

export type RsClient = grpc.Client & Record<string, any>;

export function resultStoreClients(target: string): { upload: RsClient; download: RsClient; close(): void } {
  const creds = grpc.credentials.createInsecure();
  const opts = { "grpc.max_receive_message_length": 64 * 1024 * 1024 };
  const upload: RsClient = new rs.ResultStoreUpload(target, creds, opts);
  const download: RsClient = new rs.ResultStoreDownload(target, creds, opts);
  return { upload, download, close: () => [upload, download].forEach((c) => c.close()) };
}

export function call<T = any>(client: RsClient, method: string, req: object, mask?: string): Promise<T> {
  const md = new grpc.Metadata();
  if (mask) md.set("x-goog-fieldmask", mask);
  return new Promise((resolve, reject) =>
    client[method](req, md, { deadline: Date.now() + 300_000 }, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res))),
  );
}

export const CONFIGS = ["opt", "dbg"];
export const FILES_PER_ACTION = 16;
export const MAX_BATCH_BYTES = 10 * 1024 * 1024;

export const targetId = (i: number) => `//load/pkg${Math.floor(i / 100)}:target_${i}`;
export const fileUri = (i: number, c: string, f: number) =>
  `https://storage.example.com/builds/load/pkg${Math.floor(i / 100)}/target_${i}/${c}/outputs/file-${f}-${"x".repeat(120)}.log`;

/** The upload requests of target i: the target, its configured targets and their actions. */
export function requestsOf(i: number): object[] {
  const t = targetId(i);
  const out: object[] = [
    {
      id: { target_id: t },
      upload_operation: "CREATE",
      target: { status_attributes: { status: "PASSED" }, properties: [{ key: "index", value: String(i) }], visible: true },
    },
  ];
  for (const c of CONFIGS) {
    out.push({ id: { target_id: t, configuration_id: c }, upload_operation: "CREATE", configured_target: { status_attributes: { status: "PASSED" } } });
    out.push({
      id: { target_id: t, configuration_id: c, action_id: "build" },
      upload_operation: "CREATE",
      action: {
        status_attributes: { status: "BUILT" },
        files: Array.from({ length: FILES_PER_ACTION }, (_, f) => ({ uid: `f${f}`, uri: fileUri(i, c, f), length: { value: String(1000 + f) } })),
      },
    });
  }
  return out;
}

/** A rough protobuf size of one target's requests (URIs dominate): what packs a batch. */
export const bytesPerTarget = () => CONFIGS.length * FILES_PER_ACTION * (fileUri(0, CONFIGS[0]!, 0).length + 30) + 400;

/** The resume token after batch n (batch 0: the invocation's initial_resume_token). */
export const token = (n: number) => Buffer.from(`batch-${n}`).toString("base64url");

export interface UploadProgress {
  batches: number;
  resources: number;
  bytes: number;
}

/**
 * Uploads targets [next, total) of the invocation where the server says it is (uploader_state =
 * the next target index, resume token = the last applied batch's), then finalizes; `onBatch` runs
 * after each acknowledged batch.
 */
export async function uploadInvocation(
  upload: RsClient,
  invocation: string,
  authorization_token: string,
  total: number,
  onBatch: (p: UploadProgress & { next: number }) => void = () => {},
): Promise<UploadProgress> {
  const md = await call(upload, "GetInvocationUploadMetadata", { name: `${invocation}/uploadMetadata`, authorization_token }, "resume_token,uploader_state");
  let next = md.uploader_state?.length ? Number(Buffer.from(md.uploader_state).toString()) : 0;
  let resume = md.resume_token as string;
  let n = resume ? Number(Buffer.from(resume, "base64url").toString().slice("batch-".length)) : 0;
  const progress: UploadProgress = { batches: 0, resources: 0, bytes: 0 };
  const perTarget = bytesPerTarget();
  while (next < total) {
    const end = Math.min(total, next + Math.max(1, Math.floor(MAX_BATCH_BYTES / perTarget)));
    const upload_requests: object[] = [];
    // Configured targets need their configurations: the first batch creates them.
    if (next === 0) for (const c of CONFIGS) upload_requests.push({ id: { configuration_id: c }, upload_operation: "CREATE", configuration: { configuration_attributes: { cpu: c } } });
    for (let i = next; i < end; i++) upload_requests.push(...requestsOf(i));
    const last = end === total;
    if (last) upload_requests.push({ id: {}, upload_operation: "FINALIZE", invocation: {} });
    n++;
    await call(upload, "UploadBatch", {
      parent: invocation,
      authorization_token,
      resume_token: resume,
      next_resume_token: token(n),
      uploader_state: Buffer.from(String(end)),
      upload_requests,
    });
    resume = token(n);
    progress.batches++;
    progress.resources += upload_requests.length;
    progress.bytes += (end - next) * perTarget;
    next = end;
    onBatch({ ...progress, next });
  }
  return progress;
}

/** Every resource of one kind, page by page (ListTargets / ListConfiguredTargets / ListActions). */
export async function listAll(download: RsClient, method: string, parent: string, collection: string, fields: string, pageSize = 1000, onPage?: (ms: number) => void) {
  const out: any[] = [];
  let page_token = "";
  do {
    const t0 = performance.now();
    const r = await call(download, method, { parent, page_size: pageSize, page_token }, `${collection}.${fields.split(",").join(`,${collection}.`)},next_page_token`);
    onPage?.(performance.now() - t0);
    out.push(...r[collection]);
    page_token = r.next_page_token;
  } while (page_token);
  return out;
}
