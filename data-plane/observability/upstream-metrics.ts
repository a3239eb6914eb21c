import type { Registry } from 'prom-client';

import {
  BucketCounts,
  DURATION_BUCKETS,
  registerCollectedMetric,
  type Sample,
} from './collected-metric.js';

/**
 * Why an upstream request failed, the `kind` label of `loom_proxy_upstream_errors_total`:
 * `unreachable` (connection refused, reset or DNS failure; the proxy answered 502
 * `upstream_unreachable`), `timeout` (connect, headers or body timeout; 504), `aborted` (the
 * upstream failed after the response headers were sent, so the client saw a truncated response)
 * and `error` (any other failure; 502 `upstream_error`).
 */
export type UpstreamErrorKind = 'unreachable' | 'timeout' | 'aborted' | 'error';

const ERROR_KINDS: readonly UpstreamErrorKind[] = ['unreachable', 'timeout', 'aborted', 'error'];

function errorKindIndex(kind: UpstreamErrorKind): number {
  switch (kind) {
    case 'unreachable':
      return 0;
    case 'timeout':
      return 1;
    case 'aborted':
      return 2;
    default:
      return 3;
  }
}

/** The duration histogram and error counters of one upstream target. */
export class TargetRequestMetrics {
  readonly upstream: string;
  /** Origin of the target (`http://host:port`), the `target` label value. */
  readonly target: string;
  readonly #duration = new BucketCounts(DURATION_BUCKETS);
  readonly #errors = new Float64Array(ERROR_KINDS.length);

  constructor(upstream: string, target: string) {
    this.upstream = upstream;
    this.target = target;
  }

  /**
   * Records one upstream request that got a response: seconds from dispatch to the end of the
   * upstream response body. Failed requests are recorded with {@link error} instead.
   */
  observe(durationSeconds: number): void {
    this.#duration.observe(durationSeconds);
  }

  /** Records one failed upstream request. */
  error(kind: UpstreamErrorKind): void {
    this.#errors[errorKindIndex(kind)]++;
  }

  /** Appends the `loom_proxy_upstream_request_duration_seconds` samples of this target. */
  appendDurationSamples(out: Sample[], name: string): void {
    if (this.#duration.count > 0) {
      this.#duration.appendSamples(out, name, { upstream: this.upstream, target: this.target });
    }
  }

  /** Appends the `loom_proxy_upstream_errors_total` samples of this target. */
  appendErrorSamples(out: Sample[]): void {
    for (let index = 0; index < ERROR_KINDS.length; index++) {
      if (this.#errors[index] > 0) {
        out.push({
          labels: { upstream: this.upstream, target: this.target, kind: ERROR_KINDS[index] },
          value: this.#errors[index],
        });
      }
    }
  }
}

/**
 * Requests the proxy sent to upstream targets:
 * `loom_proxy_upstream_request_duration_seconds{upstream, target}` and
 * `loom_proxy_upstream_errors_total{upstream, target, kind}`. The target label is the origin,
 * so two targets of one upstream that differ only in base path share their series.
 */
export class UpstreamMetrics {
  readonly #targets = new Map<string, TargetRequestMetrics>();

  constructor(registry: Registry) {
    registerCollectedMetric(registry, {
      name: 'loom_proxy_upstream_request_duration_seconds',
      help: 'Seconds from sending a request to an upstream target to the end of its response.',
      type: 'histogram',
      collect: () => {
        const out: Sample[] = [];
        for (const target of this.#targets.values()) {
          target.appendDurationSamples(out, 'loom_proxy_upstream_request_duration_seconds');
        }
        return out;
      },
    });
    registerCollectedMetric(registry, {
      name: 'loom_proxy_upstream_errors_total',
      help: 'Upstream requests that failed, by upstream, target origin and kind of failure.',
      type: 'counter',
      collect: () => {
        const out: Sample[] = [];
        for (const target of this.#targets.values()) target.appendErrorSamples(out);
        return out;
      },
    });
  }

  /** Returns the metrics of one target, creating them on first use. */
  forTarget(upstream: string, target: string): TargetRequestMetrics {
    const key = `${upstream}\n${target}`;
    let metrics = this.#targets.get(key);
    if (metrics === undefined) {
      metrics = new TargetRequestMetrics(upstream, target);
      this.#targets.set(key, metrics);
    }
    return metrics;
  }

  /** Records one upstream response; see {@link TargetRequestMetrics.observe}. */
  observe(upstream: string, target: string, durationSeconds: number): void {
    this.forTarget(upstream, target).observe(durationSeconds);
  }

  /** Records one failed upstream request; see {@link TargetRequestMetrics.error}. */
  error(upstream: string, target: string, kind: UpstreamErrorKind): void {
    this.forTarget(upstream, target).error(kind);
  }

  /** Drops the series of every target not in `targets`, given as upstream and origin pairs. */
  retainTargets(targets: Iterable<readonly [upstream: string, target: string]>): void {
    const keep = new Set<string>();
    for (const [upstream, target] of targets) keep.add(`${upstream}\n${target}`);
    for (const key of this.#targets.keys()) {
      if (!keep.has(key)) this.#targets.delete(key);
    }
  }
}
