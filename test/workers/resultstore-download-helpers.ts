// Helpers for the ResultStoreDownload tests of pure code.
import { ConnectError } from "@connectrpc/connect";

/** The ConnectError code f throws; 0 (OK) when it does not throw. */
export const thrownCode = (f: () => unknown): number => {
  try {
    f();
  } catch (e) {
    return ConnectError.from(e).code;
  }
  return 0;
};
