// The browser's only way to Kiln: its public services over Connect (binary), with the generated
// connect-es clients, on the page's own origin. The API key (if any) lives in sessionStorage and
// goes out as `Authorization: Bearer`.
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ActionCache, ContentAddressableStorage, Execution } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../../src/gen/google/bytestream/bytestream_pb.ts";
import { Operations } from "../../src/gen/google/longrunning/operations_pb.ts";
import { ResultStoreDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { ResultStoreFileDownload } from "../../src/gen/google/devtools/resultstore/v2/resultstore_file_download_pb.ts";
import { RemoteActions } from "../../src/gen/kiln/invocation/v1/remote_actions_pb.ts";

const KEY = "kiln.apiKey";

export const apiKey = {
  get: (): string => sessionStorage.getItem(KEY) ?? "",
  set(key: string) {
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
  },
};

/** `Authorization: Bearer` for fetches outside the clients (blob downloads). */
export const authHeaders = (): HeadersInit => (apiKey.get() ? { authorization: `Bearer ${apiKey.get()}` } : {});

const withKey: Interceptor = (next) => (req) => {
  const key = apiKey.get();
  if (key) req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};

const transport = createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [withKey] });

export const resultStore = createClient(ResultStoreDownload, transport);
export const resultFiles = createClient(ResultStoreFileDownload, transport);
export const cas = createClient(ContentAddressableStorage, transport);
export const actionCache = createClient(ActionCache, transport);
export const execution = createClient(Execution, transport);
export const operations = createClient(Operations, transport);
export const byteStream = createClient(ByteStream, transport);
export const remoteActions = createClient(RemoteActions, transport);

/** ResultStore downloads need a response field mask (X-Goog-FieldMask). */
export const mask = (fields: string) => ({ headers: { "x-goog-fieldmask": fields } });
