// Where a blob is kept is decided by its size alone (src/storage/small-blobs.ts): the worker
// stores it, and the tests that look for it, agree on this one number.

/**
 * Blobs of this many bytes or fewer are kept in the CAS index, not in R2. Fixed, not configured:
 * a read decides from the digest's size alone whether to ask the index, so a smaller value set
 * later would leave blobs already stored where no read looks.
 */
export const SMALL_BLOB_MAX_BYTES = 4096;
