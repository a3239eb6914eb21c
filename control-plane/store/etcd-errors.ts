import {
  GRPCDeadlineExceededError,
  GRPCOutOfRangeError,
  GRPCUnavailableError,
  isRecoverableError,
} from 'etcd3';

import { LoomError } from '../../common/errors.js';
import { tidyGrpcDetails } from '../../common/grpc-errors.js';

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
  const detail = tidyGrpcDetails(error instanceof Error ? error.message : String(error));
  if (error instanceof GRPCUnavailableError || error instanceof GRPCDeadlineExceededError) {
    return new LoomError('LOOM_STORE_UNAVAILABLE', `${where} is unreachable: ${detail}`, {
      cause: error,
      retryable: true,
    });
  }
  // The hints name the apply, the one request whose size the operator controls.
  const limitHint = operation === 'commit' ? describeLimitHint(detail) : undefined;
  if (limitHint) {
    return new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `${where} rejected the ${operation}: ${detail}; ${limitHint}`,
      {
        cause: error,
      },
    );
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
 * Returns advice for etcd's size limits on one transaction. etcd reports both
 * as INVALID_ARGUMENT and tells them apart only by the message text.
 */
function describeLimitHint(detail: string): string | undefined {
  if (detail.includes('too many operations in txn request')) {
    return 'the apply changes more resources than etcd --max-txn-ops allows (default 128); raise it on every etcd member or apply in smaller files';
  }
  if (detail.includes('request is too large')) {
    return 'the apply is larger than etcd --max-request-bytes allows (default 1.5 MiB); raise it on every etcd member or apply in smaller files';
  }
  return undefined;
}

/**
 * Returns true when etcd rejected a read because the revision it names has been
 * compacted or is in the future. etcd reports both with gRPC status OUT_OF_RANGE.
 */
export function isRevisionOutOfRange(error: unknown): boolean {
  return error instanceof GRPCOutOfRangeError;
}

/** True for etcd's rejection of a transaction with too many operations or bytes. */
export function isTransactionTooLarge(error: unknown): boolean {
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    if (describeLimitHint(cause.message) !== undefined) return true;
    if (cause.message.includes('received message larger than max')) return true;
  }
  return false;
}
