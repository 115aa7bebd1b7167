// Where a blob's split (its chunk list, see chunked-blobs.ts) is kept: beside the CAS, one record
// per blob and chunker parameters. Eviction deletes a blob's record with its object.
export const splitRecordKey = (tenant: string, hash: string, avgSize: number, seed = 0) => `splits/${tenant}/${hash}/${avgSize}-${seed}`;
