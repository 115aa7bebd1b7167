// Every service Kiln serves, with its one implementation. Surfaces are built from this list.
import type { DescFile, DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ActionCache, Capabilities, ContentAddressableStorage, Execution } from "../gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { ByteStream } from "../gen/google/bytestream/bytestream_pb.ts";
import { ResultStoreUpload } from "../gen/google/devtools/resultstore/v2/resultstore_upload_pb.ts";
import { ResultStoreDownload } from "../gen/google/devtools/resultstore/v2/resultstore_download_pb.ts";
import { resultStoreDownloadService } from "./resultstore-download.ts";
import { ResultStoreFileDownload } from "../gen/google/devtools/resultstore/v2/resultstore_file_download_pb.ts";
import { resultStoreFileDownloadService } from "./resultstore-file-download.ts";
import { PublishBuildEvent } from "../gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { BuildEventIngest } from "../gen/kiln/bes/v1/ingest_pb.ts";
import { buildEventIngestService, publishBuildEventService } from "./build-events.ts";
import { file_bep } from "../bes/bep.ts";
import { Operations } from "../gen/google/longrunning/operations_pb.ts";
import { actionCacheService } from "./action-cache.ts";
import { Fetch, Push } from "../gen/build/bazel/remote/asset/v1/remote_asset_pb.ts";
import { fetchService, pushService } from "./asset.ts";
import { byteStreamService } from "./bytestream.ts";
import { capabilitiesService } from "./capabilities.ts";
import { casService } from "./cas.ts";
import { executionService } from "./execution.ts";
import { operationsService } from "./operations.ts";
import { RESULTSTORE_UPLOAD_MAX } from "./limits.ts";
import { resultStoreUploadService } from "./resultstore-upload.ts";
import { RunnerService } from "../gen/kiln/runner/v1/runner_pb.ts";
import { runnerService } from "./runner.ts";
import { RemoteActions } from "../gen/kiln/invocation/v1/remote_actions_pb.ts";
import { remoteActionsService } from "./remote-actions.ts";

export interface ServiceEntry<S extends DescService = DescService> {
  service: S;
  impl: ServiceImpl<S>;
  /** Largest request message (binary) when the service needs more than the surfaces' default. */
  maxRequestBytes?: number;
  /** Files of the messages this service carries in google.protobuf.Any, for the JSON codecs. */
  anyTypes?: DescFile[];
}

const entry = <S extends DescService>(service: S, impl: ServiceImpl<S>, maxRequestBytes?: number, anyTypes?: DescFile[]): ServiceEntry => ({
  service,
  impl: impl as unknown as ServiceImpl<DescService>,
  maxRequestBytes,
  anyTypes,
});

/** Every file the JSON codecs must know: the services' own and the types they carry in Any. */
export const serviceFiles = (): DescFile[] => services.flatMap((s) => [s.service.file, ...(s.anyTypes ?? [])]);

export const services: ServiceEntry[] = [
  entry(Capabilities, capabilitiesService),
  entry(ContentAddressableStorage, casService),
  entry(ActionCache, actionCacheService),
  entry(ByteStream, byteStreamService),
  entry(Execution, executionService),
  entry(Operations, operationsService),
  entry(ResultStoreUpload, resultStoreUploadService, RESULTSTORE_UPLOAD_MAX),
  entry(ResultStoreDownload, resultStoreDownloadService),
  entry(RunnerService, runnerService),
  entry(ResultStoreFileDownload, resultStoreFileDownloadService),
  entry(PublishBuildEvent, publishBuildEventService, RESULTSTORE_UPLOAD_MAX, [file_bep]),
  entry(BuildEventIngest, buildEventIngestService, RESULTSTORE_UPLOAD_MAX, [file_bep]),
  entry(RemoteActions, remoteActionsService),
  entry(Fetch, fetchService),
  entry(Push, pushService),
];
