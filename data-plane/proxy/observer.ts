import type { IncomingMessage } from 'node:http';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { PROXY_ERRORS, type ProxyError } from './error-response.js';

/** Route name reported for requests that matched no route. */
export const UNMATCHED = '(unmatched)';

/**
 * Kind of failure of an attempt to send a request to an upstream target. `unreachable`: refused, reset
 * or closed before the response headers, or the host name did not resolve. `timeout`: connect, headers or body timeout.
 * `aborted`: the upstream failed after the response headers reached the client. `error`: any
 * other failure.
 */
export type UpstreamFailure = 'unreachable' | 'timeout' | 'aborted' | 'error';

/**
 * Returns the failure kind of an attempt from the error response it leads to. An undefined
 * `error` means the attempt failed after the response headers were sent, so it is `aborted`.
 */
export function upstreamFailureOf(error: ProxyError | undefined): UpstreamFailure {
  if (error === undefined) return 'aborted';
  if (error === PROXY_ERRORS.upstreamUnreachable) return 'unreachable';
  if (error === PROXY_ERRORS.upstreamNameNotResolved) return 'unreachable';
  if (error === PROXY_ERRORS.upstreamTimeout) return 'timeout';
  return 'error';
}

/**
 * Hooks the proxy calls on its request path, for metrics and the access log. Implementations
 * must be cheap and must not throw; `enabled` false lets the proxy skip the clock reads.
 */
export interface ProxyObserver {
  readonly enabled: boolean;
  /**
   * A request finished: the response ended, failed after its headers, or the client left
   * (status 0). `target` is the target of the last attempt; undefined when the request was not
   * forwarded. `startTime` is `performance.now()` at arrival, 0 when `enabled` was false.
   */
  requestFinished(
    req: IncomingMessage,
    route: string,
    status: number,
    target: UpstreamTarget | undefined,
    bytesSent: number,
    startTime: number,
  ): void;
  /**
   * One attempt to send a request to `target` ended: with the complete upstream response
   * (`failure` undefined, whatever its status) or with a failure. `startTime` is
   * `performance.now()` when the attempt was dispatched. Attempts cancelled because the client
   * left or its body was too large are not reported.
   */
  attemptFinished(
    target: UpstreamTarget,
    failure: UpstreamFailure | undefined,
    startTime: number,
  ): void;
  /** An attempt failed and the request is sent again. */
  retried(route: string): void;
  /** An upgraded connection (WebSocket) opened or closed. */
  tunnelOpened(): void;
  tunnelClosed(): void;
  /** A client connection was cut off by the send timeout. */
  sendTimedOut(): void;
}

/** An observer that records nothing. */
export const NO_OBSERVER: ProxyObserver = Object.freeze({
  enabled: false,
  requestFinished() {},
  attemptFinished() {},
  retried() {},
  tunnelOpened() {},
  tunnelClosed() {},
  sendTimedOut() {},
});
