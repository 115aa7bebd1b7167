// Request size limits of services that need more than the surfaces' defaults.

/** UploadBatch: the proto recommends batches of 10 MiB; 12 MiB leaves room for a client's rounding. */
export const RESULTSTORE_UPLOAD_MAX = 12 * 1024 * 1024;
