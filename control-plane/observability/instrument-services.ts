import type {
  handleBidiStreamingCall,
  handleUnaryCall,
  ServerDuplexStream,
  ServiceError,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';

import type {
  ApplyRequest,
  ApplyResponse,
  DeleteRequest,
  DeleteResponse,
} from '../../proto/gen/loom/v1/admin.js';
import type { StreamRequest } from '../../proto/gen/loom/v1/data_plane.js';
import type { ControlPlaneMetrics } from './control-plane-metrics.js';

/** Trailing metadata key that carries the Loom error code of a failed call. */
const ERROR_CODE_KEY = 'loom-error-code';

/**
 * Wraps the SnapshotService implementation so that every nack on a stream is counted. The
 * wrapper adds its own `data` listener and leaves the stream's handling unchanged. The stream's
 * `ProxySession` counts acks, because only acks of versions sent to the proxy count.
 */
export function instrumentSnapshotService(
  implementation: UntypedServiceImplementation,
  metrics: ControlPlaneMetrics,
): UntypedServiceImplementation {
  const stream = implementation.Stream as handleBidiStreamingCall<StreamRequest, Buffer>;
  return {
    ...implementation,
    Stream(call: ServerDuplexStream<StreamRequest, Buffer>) {
      call.on('data', (request: StreamRequest) => {
        const kind = request.kind;
        if (kind?.$case === 'nack') metrics.nacked(kind.nack.version);
      });
      stream(call);
    },
  };
}

/**
 * Wraps the AdminService implementation so that every apply is counted with its result, and
 * every committed apply or delete is reported for the watch lag.
 */
export function instrumentAdminService(
  implementation: UntypedServiceImplementation,
  metrics: ControlPlaneMetrics,
): UntypedServiceImplementation {
  const apply = implementation.apply as handleUnaryCall<ApplyRequest, ApplyResponse>;
  const instrumentedApply: handleUnaryCall<ApplyRequest, ApplyResponse> = (call, callback) => {
    apply(call, (error, response, ...rest) => {
      if (error) {
        const code = (error as Partial<ServiceError>).metadata?.get(ERROR_CODE_KEY)[0];
        metrics.applied('error', typeof code === 'string' ? code : undefined);
      } else if (response?.committed) {
        metrics.applied('committed');
        metrics.commitConfirmed(response.epoch, response.version, response.committedAtMs);
      } else {
        metrics.applied(call.request.dryRun ? 'dry_run' : 'unchanged');
      }
      callback(error, response, ...rest);
    });
  };
  const remove = implementation.delete as handleUnaryCall<DeleteRequest, DeleteResponse>;
  const instrumentedDelete: handleUnaryCall<DeleteRequest, DeleteResponse> = (call, callback) => {
    remove(call, (error, response, ...rest) => {
      // The response carries no commit time; the store confirmed the commit just before.
      if (!error && response) metrics.commitConfirmed(undefined, response.version, Date.now());
      callback(error, response, ...rest);
    });
  };
  return { ...implementation, apply: instrumentedApply, delete: instrumentedDelete };
}
