import type { IncomingMessage } from 'node:http';
import type { UpstreamTarget } from '../upstreams/balancer.js';

/** Route name reported for requests that matched no route. */
export const UNMATCHED = '(unmatched)';

/**
 * Hooks the proxy calls on its request path, for metrics and the access log. Implementations
 * must be cheap and must not throw; `enabled` false lets the proxy skip the clock reads.
 */
export interface ProxyObserver {
  readonly enabled: boolean;
  /**
   * A request finished: the response ended, failed after its headers, or the client left
   * (status 0). `startTime` is `performance.now()` at arrival, 0 when `enabled` was false.
   */
  requestFinished(
    req: IncomingMessage,
    route: string,
    status: number,
    target: UpstreamTarget | undefined,
    bytesSent: number,
    startTime: number,
  ): void;
  /** An attempt failed and the request is sent again. */
  retried(route: string): void;
  /** An upgraded connection (WebSocket) opened or closed. */
  tunnelOpened(): void;
  tunnelClosed(): void;
}

/** An observer that records nothing. */
export const NO_OBSERVER: ProxyObserver = Object.freeze({
  enabled: false,
  requestFinished() {},
  retried() {},
  tunnelOpened() {},
  tunnelClosed() {},
});
