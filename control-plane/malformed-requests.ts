import type {
  handleBidiStreamingCall,
  handleUnaryCall,
  MethodDefinition,
  ServerDuplexStream,
  ServerUnaryCall,
  ServiceDefinition,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';

import { LoomError } from '../common/errors.js';
import { toServiceError } from '../common/grpc-errors.js';
import { LogLimiter } from '../common/log-limiter.js';
import type { Logger } from '../common/logger.js';

/** Maximum length of a decoder's error quoted in the status message. */
const MAX_REASON_LENGTH = 200;
/**
 * Rejections logged per window of {@link REJECTION_LOG_WINDOW_MS} and service; the next line
 * counts those left out, so that a client sending garbage in a loop cannot flood the log.
 */
const REJECTION_LOG_LINES = 10;
const REJECTION_LOG_WINDOW_MS = 10_000;

/**
 * A request message that failed to decode, in place of the decoded message. grpc-js 1.14.7
 * ends a call whose request deserializer throws with INTERNAL and the fixed message "Error
 * deserializing request" (server-interceptors.js). The deserializers of
 * `rejectMalformedRequests` therefore return this instead, and the wrapped handlers end the
 * call with INVALID_ARGUMENT.
 */
class MalformedRequest {
  readonly error: LoomError;

  constructor(path: string, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    this.error = new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${path} request: the message is not valid protobuf ` +
        `(${reason.slice(0, MAX_REASON_LENGTH)}); encode it from the .proto files in proto/loom/v1`,
    );
  }
}

/** A service definition and its implementation, ready for `Server.addService`. */
export interface CheckedService {
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

/**
 * Returns `definition` and `implementation` changed so that a request message that does not
 * decode ends its call with INVALID_ARGUMENT and a message naming the method and the decoder's
 * error, and a warning is logged. A unary handler is not called for such a request. A
 * bidirectional stream ends at the first such message, and its handler's `data` listeners see
 * it as an object without fields, after the call has ended.
 *
 * @throws LoomError `LOOM_INTERNAL` for a client-streaming method, which this does not support.
 */
export function rejectMalformedRequests(
  definition: ServiceDefinition,
  implementation: UntypedServiceImplementation,
  logger: Logger,
): CheckedService {
  const checkedDefinition: Record<string, MethodDefinition<unknown, unknown>> = {};
  const checkedImplementation: UntypedServiceImplementation = { ...implementation };
  const limiter = new LogLimiter(REJECTION_LOG_LINES, REJECTION_LOG_WINDOW_MS);
  const report: RejectionLog = (path, peer, request) => {
    const suppressed = limiter.take();
    if (suppressed === undefined) return;
    logger.warn(
      { method: path, peer, reason: request.error.message, suppressed },
      'malformed request rejected',
    );
  };
  for (const [name, method] of Object.entries(definition)) {
    checkedDefinition[name] = tolerantMethod(method);
    const handler = implementation[name];
    if (handler === undefined) continue;
    if (!method.requestStream) {
      checkedImplementation[name] = checkUnary(method.path, handler as UnaryHandler, report);
    } else if (method.responseStream) {
      checkedImplementation[name] = checkBidi(method.path, handler as BidiHandler, report);
    } else {
      throw new LoomError(
        'LOOM_INTERNAL',
        `${method.path} is a client-streaming method, which rejectMalformedRequests does not support`,
      );
    }
  }
  return { definition: checkedDefinition, implementation: checkedImplementation };
}

type UnaryHandler = handleUnaryCall<unknown, unknown>;
/** Logs one rejected request, or counts it when the log limit is reached. */
type RejectionLog = (path: string, peer: string, request: MalformedRequest) => void;
type BidiHandler = handleBidiStreamingCall<unknown, unknown>;

/** Returns `method` with a request deserializer that returns a MalformedRequest for bad bytes. */
function tolerantMethod(method: MethodDefinition<unknown, unknown>) {
  const deserialize = method.requestDeserialize;
  return {
    ...method,
    requestDeserialize: (bytes: Buffer): unknown => {
      try {
        return deserialize(bytes);
      } catch (error) {
        return new MalformedRequest(method.path, error);
      }
    },
  };
}

function checkUnary(path: string, handler: UnaryHandler, report: RejectionLog): UnaryHandler {
  return (call: ServerUnaryCall<unknown, unknown>, callback) => {
    const request: unknown = call.request;
    if (request instanceof MalformedRequest) {
      report(path, call.getPeer(), request);
      callback(toServiceError(request.error));
      return;
    }
    handler(call, callback);
  };
}

function checkBidi(path: string, handler: BidiHandler, report: RejectionLog): BidiHandler {
  return (call: ServerDuplexStream<unknown, unknown>) => {
    // Registered before the handler's listeners, so the call ends before they see the message.
    call.on('data', (request: unknown) => {
      if (!(request instanceof MalformedRequest)) return;
      report(path, call.getPeer(), request);
      call.emit('error', toServiceError(request.error));
    });
    handler(call);
  };
}
