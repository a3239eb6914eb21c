import {
  GRPCDeadlineExceededError,
  GRPCOutOfRangeError,
  GRPCUnavailableError,
  isRecoverableError,
} from 'etcd3';

import { LoomError } from '../../common/errors.js';

/**
 * Converts an error thrown by the etcd3 client into a `LoomError` with code
 * `LOOM_STORE_UNAVAILABLE`. Unavailable and timed-out calls read as "etcd is
 * unreachable". Every error that etcd3 marks recoverable is retryable. The rest
 * (invalid request, permission denied, closed client) are not. A `LoomError`
 * passes through unchanged.
 */
export function toStoreError(error: unknown, endpoints: string[], operation: string): LoomError {
  if (error instanceof LoomError) {
    return error;
  }

  const where = `etcd at ${endpoints.join(',')}`;
  const detail = error instanceof Error ? error.message : String(error);
  if (error instanceof GRPCUnavailableError || error instanceof GRPCDeadlineExceededError) {
    return new LoomError('LOOM_STORE_UNAVAILABLE', `${where} is unreachable: ${detail}`, {
      cause: error,
      retryable: true,
    });
  }
  const retryable = error instanceof Error && isRecoverableError(error);
  const verb = retryable ? 'failed' : 'rejected';
  return new LoomError(
    'LOOM_STORE_UNAVAILABLE',
    `${where} ${verb} the ${operation} request: ${detail}`,
    {
      cause: error,
      retryable,
    },
  );
}

/**
 * Returns true when etcd rejected a read because the revision it names has been
 * compacted or is in the future. etcd reports both with gRPC status OUT_OF_RANGE.
 */
export function isRevisionOutOfRange(error: unknown): boolean {
  return error instanceof GRPCOutOfRangeError;
}
