import type { Registry } from 'prom-client';

import {
  BucketCounts,
  DURATION_BUCKETS,
  registerCollectedMetric,
  type Sample,
} from './collected-metric.js';

/**
 * Route label of requests that matched no route (404, 405, 400, 503 before the first
 * snapshot). Route names cannot contain parentheses, so it never names a real route.
 */
export const UNMATCHED_ROUTE = '(unmatched)';

/** Methods with their own label value; every other method is counted as `OTHER`. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE'];
const OTHER_METHOD = METHODS.length;
const METHOD_LABELS = [...METHODS, 'OTHER'];

/** `status_class` values; status 0, or anything outside 100-599, means no response was sent. */
const STATUS_CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx'];

function methodIndex(method: string): number {
  switch (method) {
    case 'GET':
      return 0;
    case 'HEAD':
      return 1;
    case 'POST':
      return 2;
    case 'PUT':
      return 3;
    case 'DELETE':
      return 4;
    case 'PATCH':
      return 5;
    case 'OPTIONS':
      return 6;
    case 'CONNECT':
      return 7;
    case 'TRACE':
      return 8;
    default:
      return OTHER_METHOD;
  }
}

function statusClassIndex(status: number): number {
  return status >= 100 && status < 600 ? Math.floor(status / 100) : 0;
}

/**
 * The request counters and duration histogram of one route. Hold on to it (for example in the
 * route's table binding) to skip the per-request map lookup of {@link RequestMetrics.observe}.
 */
export class RouteRequestMetrics {
  /** Route name, the `route` label value. */
  readonly route: string;
  /** Requests per method and status class, indexed `method * STATUS_CLASSES.length + class`. */
  readonly #requests = new Float64Array(METHOD_LABELS.length * STATUS_CLASSES.length);
  readonly #duration = new BucketCounts(DURATION_BUCKETS);

  constructor(route: string) {
    this.route = route;
  }

  /**
   * Records one finished request: its method as received, the status sent to the client (0
   * when the connection closed before a response was sent) and the seconds from the request's
   * arrival to the end of the response. Never throws, allocates nothing.
   */
  observe(method: string, status: number, durationSeconds: number): void {
    this.#requests[methodIndex(method) * STATUS_CLASSES.length + statusClassIndex(status)]++;
    this.#duration.observe(durationSeconds);
  }

  /** Appends the `loom_proxy_requests_total` samples of this route. */
  appendRequestSamples(out: Sample[]): void {
    for (let index = 0; index < this.#requests.length; index++) {
      const value = this.#requests[index];
      if (value === 0) {
        continue;
      }
      out.push({
        labels: {
          route: this.route,
          method: METHOD_LABELS[Math.floor(index / STATUS_CLASSES.length)],
          status_class: STATUS_CLASSES[index % STATUS_CLASSES.length],
        },
        value,
      });
    }
  }

  /** Appends the `loom_proxy_request_duration_seconds` samples of this route. */
  appendDurationSamples(out: Sample[], name: string): void {
    if (this.#duration.count > 0) {
      this.#duration.appendSamples(out, name, { route: this.route });
    }
  }
}

/**
 * Requests served by the proxy: `loom_proxy_requests_total{route, method, status_class}` and
 * `loom_proxy_request_duration_seconds{route}`. Labels are bounded: route names come from the
 * configuration (never paths), methods outside the standard nine count as `OTHER`, and
 * statuses are grouped by class. Series of routes that left the configuration are dropped by
 * {@link retainRoutes}.
 */
export class RequestMetrics {
  readonly #routes = new Map<string, RouteRequestMetrics>();

  constructor(registry: Registry) {
    registerCollectedMetric(registry, {
      name: 'loom_proxy_requests_total',
      help: 'Requests answered by the proxy, by route, method and status class.',
      type: 'counter',
      collect: () => {
        const out: Sample[] = [];
        for (const route of this.#routes.values()) route.appendRequestSamples(out);
        return out;
      },
    });
    registerCollectedMetric(registry, {
      name: 'loom_proxy_request_duration_seconds',
      help: 'Seconds from the arrival of a request to the end of its response, by route.',
      type: 'histogram',
      collect: () => {
        const out: Sample[] = [];
        for (const route of this.#routes.values()) {
          route.appendDurationSamples(out, 'loom_proxy_request_duration_seconds');
        }
        return out;
      },
    });
  }

  /**
   * Returns the metrics of one route, creating them on first use. Pass {@link UNMATCHED_ROUTE}
   * for requests that matched no route.
   */
  forRoute(route: string): RouteRequestMetrics {
    let metrics = this.#routes.get(route);
    if (metrics === undefined) {
      metrics = new RouteRequestMetrics(route);
      this.#routes.set(route, metrics);
    }
    return metrics;
  }

  /** Records one finished request of `route`; see {@link RouteRequestMetrics.observe}. */
  observe(route: string, method: string, status: number, durationSeconds: number): void {
    this.forRoute(route).observe(method, status, durationSeconds);
  }

  /**
   * Drops the series of every route not in `routes`, except {@link UNMATCHED_ROUTE}. Called
   * when a snapshot is applied. A request still in flight on a dropped route records into the
   * detached object, so its count is lost from the exposition.
   */
  retainRoutes(routes: Iterable<string>): void {
    const keep = new Set(routes);
    keep.add(UNMATCHED_ROUTE);
    for (const route of this.#routes.keys()) {
      if (!keep.has(route)) this.#routes.delete(route);
    }
  }
}
