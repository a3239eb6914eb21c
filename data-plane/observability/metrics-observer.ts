import type { IncomingMessage } from 'node:http';

import type { ProxyObserver } from '../proxy/observer.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import type { AccessLog } from './access-log.js';
import type { ProxyMetrics } from './proxy-metrics.js';
import type { TargetRequestMetrics } from './upstream-metrics.js';

/**
 * The proxy's request hooks, recording into {@link ProxyMetrics} and the {@link AccessLog}.
 * Per request it reads the clock once, updates typed-array counters through two map lookups
 * (route name, and a WeakMap keyed by the target object) and, only when the access log is on,
 * formats one line.
 */
export class MetricsObserver implements ProxyObserver {
  readonly enabled = true;
  readonly #metrics: ProxyMetrics;
  readonly #accessLog: AccessLog;
  readonly #targets = new WeakMap<UpstreamTarget, TargetRequestMetrics>();

  constructor(metrics: ProxyMetrics, accessLog: AccessLog) {
    this.#metrics = metrics;
    this.#accessLog = accessLog;
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
    if (target !== undefined) this.#observeUpstream(target, status, bytesSent, seconds);

    if (this.#accessLog.enabled) {
      this.#accessLog.write({
        route,
        method,
        path: req.url ?? '',
        status,
        upstream: target?.upstream ?? '',
        target: target?.origin ?? '',
        bytesSent,
        durationSeconds: seconds,
      });
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

  /**
   * Records the upstream side of a forwarded request. The hook reports only the final status,
   * so 502 and 504 count as upstream errors and the request's duration is used as the
   * upstream's.
   */
  #observeUpstream(
    target: UpstreamTarget,
    status: number,
    bytesSent: number,
    seconds: number,
  ): void {
    let metrics = this.#targets.get(target);
    if (metrics === undefined) {
      metrics = this.#metrics.upstreams.forTarget(target.upstream, target.origin);
      this.#targets.set(target, metrics);
    }
    // NOTE: a 502 or 504 that the upstream itself sent also counts as an error here, because
    // the hook does not say whether the proxy or the upstream produced the status.
    if (status === 504) metrics.error('timeout');
    else if (status === 502) metrics.error('unreachable');
    else if (status === 0) {
      // Status 0: the client left. With bytes already sent, the response was cut short.
      if (bytesSent > 0) metrics.error('aborted');
    } else metrics.observe(seconds);
  }
}
