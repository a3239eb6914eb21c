import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

import { ConfigError, LoomError, type ConfigIssue, type LoomErrorCode } from './errors.js';

const CODE_KEY = 'loom-error-code';
const ISSUES_KEY = 'loom-config-issues';

const GRPC_STATUS: Record<LoomErrorCode, status> = {
  LOOM_INVALID_CONFIG: status.INVALID_ARGUMENT,
  LOOM_INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  LOOM_NOT_FOUND: status.NOT_FOUND,
  LOOM_VERSION_CONFLICT: status.FAILED_PRECONDITION,
  LOOM_STORE_UNAVAILABLE: status.UNAVAILABLE,
  LOOM_UNAVAILABLE: status.UNAVAILABLE,
  LOOM_UNAUTHENTICATED: status.UNAUTHENTICATED,
  LOOM_PERMISSION_DENIED: status.PERMISSION_DENIED,
  LOOM_RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
  LOOM_STORE_CORRUPT: status.INTERNAL,
  LOOM_SNAPSHOT_REJECTED: status.INVALID_ARGUMENT,
  LOOM_INTERNAL: status.INTERNAL,
};

/**
 * Converts any error raised by a handler into a gRPC error. A LoomError keeps
 * its code (and config issues) in trailing metadata so that loomctl can
 * rebuild it; anything else becomes INTERNAL without internal details.
 */
export function toServiceError(error: unknown): Partial<ServiceError> {
  const metadata = new Metadata();
  if (!(error instanceof LoomError)) {
    metadata.set(CODE_KEY, 'LOOM_INTERNAL');
    // Internal details stay in the server log, never in the client's output.
    return {
      code: status.INTERNAL,
      details: 'internal error; see the control plane log',
      metadata,
    };
  }

  metadata.set(CODE_KEY, error.code);
  if (error instanceof ConfigError) metadata.set(ISSUES_KEY, JSON.stringify(error.issues));
  return { code: GRPC_STATUS[error.code], details: error.message, metadata };
}

/** Converts an error from a gRPC call back into a LoomError where the server sent one. */
export function fromServiceError(error: ServiceError): LoomError {
  const code = error.metadata?.get(CODE_KEY)[0];
  const issues = error.metadata?.get(ISSUES_KEY)[0];
  if (code === 'LOOM_INVALID_CONFIG' && typeof issues === 'string') {
    return new ConfigError(JSON.parse(issues) as ConfigIssue[]);
  }
  if (typeof code === 'string' && code in GRPC_STATUS) {
    return new LoomError(code as LoomErrorCode, error.details, { cause: error });
  }
  if (error.code === status.UNAVAILABLE || error.code === status.DEADLINE_EXCEEDED) {
    return new LoomError('LOOM_UNAVAILABLE', error.details, { cause: error, retryable: true });
  }
  return new LoomError('LOOM_INTERNAL', `${status[error.code]}: ${error.details}`, {
    cause: error,
  });
}
