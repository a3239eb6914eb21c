import type { IncomingMessage } from 'node:http';

import type { ProxyObserver, UpstreamFailure } from '../proxy/observer.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import type { AccessLog } from './access-log.js';
import type { ProxyMetrics } from './proxy-metrics.js';
import type { TargetRequestMetrics } from './upstream-metrics.js';

/**
 * The proxy's request hooks, recording into {@link ProxyMetrics} and the {@link AccessLog}.
 * It reads the clock at the end of each request and of each attempt, finds the route's and the
 * target's counters through one map lookup each, and appends one access log line when the log
 * is on.
 */
export class MetricsObserver implements ProxyObserver {
  readonly enabled = true;
  readonly #metrics: ProxyMetrics;
  readonly #accessLog: AccessLog;
  readonly #logRequests: boolean;
  readonly #targets = new WeakMap<UpstreamTarget, TargetRequestMetrics>();

  constructor(metrics: ProxyMetrics, accessLog: AccessLog) {
    this.#metrics = metrics;
    this.#accessLog = accessLog;
    this.#logRequests = accessLog.enabled;
  }

  requestFinished(
    req: IncomingMessage,
    route: string,
    status: number,
    target: UpstreamTarget | undefined,
    bytesSent: number,
    startTime: number,
  ): void {
    const seconds = (performance.now() - startTime) / 1e3;
    const method = req.method ?? 'GET';
    this.#metrics.requests.observe(route, method, status, seconds);

    if (this.#logRequests) {
      this.#accessLog.writeRequest(
        route,
        method,
        req.url ?? '',
        status,
        target,
        bytesSent,
        seconds,
      );
    }
  }

  attemptFinished(
    target: UpstreamTarget,
    failure: UpstreamFailure | undefined,
    startTime: number,
  ): void {
    let metrics = this.#targets.get(target);
    if (metrics === undefined) {
      metrics = this.#metrics.upstreams.forTarget(target.upstream, target.origin);
      this.#targets.set(target, metrics);
    }
    if (failure === undefined) {
      metrics.observe((performance.now() - startTime) / 1e3);
    } else {
      metrics.error(failure);
    }
  }

  retried(route: string): void {
    this.#metrics.retry(route);
  }

  tunnelOpened(): void {
    this.#metrics.tunnelOpened();
  }

  tunnelClosed(): void {
    this.#metrics.tunnelClosed();
  }

  sendTimedOut(): void {
    this.#metrics.sendTimedOut();
  }
}
