import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

import { registerCollectedMetric } from './collected-metric.js';
import { RequestMetrics } from './request-metrics.js';
import { TableTracker } from './table-tracker.js';
import { UpstreamMetrics } from './upstream-metrics.js';

/** Interval of the event-loop delay samples behind `nodejs_eventloop_lag_*`, in ms. */
export const EVENT_LOOP_SAMPLE_MS = 100;

/** Upper bounds, in seconds, of the snapshot apply and table build histograms. */
const APPLY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Upstreams and their targets as a snapshot lists them, origins already resolved. */
export interface TargetRef {
  upstream: string;
  /** Origin of the target URL, `scheme://host:port`, the label of upstream request metrics. */
  origin: string;
  /** Target URL as the snapshot stores it, the label of target health metrics. */
  url: string;
}

/**
 * Every metric of one proxy process, in its own prom-client registry that the admin port serves
 * at `GET /metrics`. The request path uses `requests`, `upstreams`, the connection and tunnel
 * counters and `retry`; these cost a few nanoseconds and never throw. Everything else runs once
 * per snapshot, health change or scrape.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  /** `loom_proxy_requests_total` and `loom_proxy_request_duration_seconds`. */
  readonly requests: RequestMetrics;
  /** `loom_proxy_upstream_request_duration_seconds` and `loom_proxy_upstream_errors_total`. */
  readonly upstreams: UpstreamMetrics;
  /** Routing tables built and not yet garbage-collected. */
  readonly tables = new TableTracker();
  #activeConnections = 0;
  #connections = 0;
  #activeTunnels = 0;
  #tunnels = 0;
  #sendTimeouts = 0;
  #snapshotVersion = 0;
  #snapshotRoutes = 0;
  #controlPlaneConnected: () => boolean = () => false;
  /** Retries by route name. */
  readonly #retries = new Map<string, number>();
  readonly #targetHealthy: Gauge<'upstream' | 'target'>;
  readonly #ejections: Counter<'upstream' | 'target'>;
  readonly #healthTargets = new Map<string, TargetRef>();
  readonly #snapshots: Counter<'result'>;
  readonly #applySeconds: Histogram;
  readonly #buildSeconds: Histogram;

  constructor() {
    const registers = [this.registry];
    // prom-client samples event-loop delay every 10 ms by default, which cost an idle proxy
    // about 3 ms of CPU per second here, and every 100 ms under 1 ms. Proxies of a fleet
    // often share cores, so the finer samples would take time from all of them.
    collectDefaultMetrics({
      register: this.registry,
      eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
    });
    this.requests = new RequestMetrics(this.registry);
    this.upstreams = new UpstreamMetrics(this.registry);
    this.#registerGauges();

    registerCollectedMetric(this.registry, {
      name: 'loom_proxy_retries_total',
      help: 'Requests sent again to another target after a failed attempt, by route.',
      type: 'counter',
      collect: () => [...this.#retries].map(([route, value]) => ({ labels: { route }, value })),
    });
    this.#targetHealthy = new Gauge({
      name: 'loom_proxy_target_healthy',
      help: '1 while a target is in rotation, 0 while it is ejected, by upstream and target URL.',
      labelNames: ['upstream', 'target'],
      registers,
    });
    this.#ejections = new Counter({
      name: 'loom_proxy_target_ejections_total',
      help: 'Times a target was taken out of rotation after failures, by upstream and target URL.',
      labelNames: ['upstream', 'target'],
      registers,
    });
    this.#snapshots = new Counter({
      name: 'loom_proxy_snapshots_total',
      help: 'Snapshots received from the control plane, by result: applied or rejected.',
      labelNames: ['result'],
      registers,
    });
    this.#applySeconds = new Histogram({
      name: 'loom_proxy_snapshot_apply_seconds',
      help: 'Seconds to apply a snapshot: table build, metric series update and table swap.',
      buckets: APPLY_BUCKETS,
      registers,
    });
    this.#buildSeconds = new Histogram({
      name: 'loom_proxy_table_build_seconds',
      help: 'Seconds to build the routing table and upstream balancers of a snapshot.',
      buckets: APPLY_BUCKETS,
      registers,
    });
    this.#snapshots.inc({ result: 'applied' }, 0);
    this.#snapshots.inc({ result: 'rejected' }, 0);
  }

  /** Counts a new client connection on the traffic listener. */
  connectionOpened(): void {
    this.#activeConnections++;
    this.#connections++;
  }

  /** Counts a client connection that closed. */
  connectionClosed(): void {
    this.#activeConnections--;
  }

  /** Counts a WebSocket (or other upgraded) tunnel that was established. */
  tunnelOpened(): void {
    this.#activeTunnels++;
    this.#tunnels++;
  }

  /** Counts a tunnel that closed. */
  tunnelClosed(): void {
    this.#activeTunnels--;
  }

  /** Counts a client connection cut off by the send timeout. */
  sendTimedOut(): void {
    this.#sendTimeouts++;
  }

  /** Counts one retry of a request of `route`. */
  retry(route: string): void {
    this.#retries.set(route, (this.#retries.get(route) ?? 0) + 1);
  }

  /** Sets whether a target is in rotation (1) or ejected (0). */
  setTargetHealthy(upstream: string, target: string, healthy: boolean): void {
    this.#targetHealthy.set({ upstream, target }, healthy ? 1 : 0);
  }

  /** Counts an ejection of a target and sets it unhealthy. */
  targetEjected(upstream: string, target: string): void {
    this.#ejections.inc({ upstream, target });
    this.setTargetHealthy(upstream, target, false);
  }

  /** Sets the callback that tells whether the snapshot stream to a control plane is up. */
  watchControlPlane(connected: () => boolean): void {
    this.#controlPlaneConnected = connected;
  }

  /** Records a snapshot that was applied, with its timings in seconds. */
  snapshotApplied(version: number, routes: number, applySeconds: number, buildSeconds: number) {
    this.#snapshotVersion = version;
    this.#snapshotRoutes = routes;
    this.#snapshots.inc({ result: 'applied' });
    this.#applySeconds.observe(applySeconds);
    this.#buildSeconds.observe(buildSeconds);
  }

  /** Records a snapshot that failed to build and was nacked. */
  snapshotRejected(): void {
    this.#snapshots.inc({ result: 'rejected' });
  }

  /**
   * Drops the series of routes and targets that the new snapshot no longer has, and starts the
   * health series of new targets at 1. Call it when a snapshot is applied.
   */
  retain(routes: readonly string[], targets: readonly TargetRef[]): void {
    this.requests.retainRoutes(routes);
    this.upstreams.retainTargets(targets.map((ref) => [ref.upstream, ref.origin] as const));

    const routeSet = new Set(routes);
    for (const route of this.#retries.keys()) {
      if (!routeSet.has(route)) this.#retries.delete(route);
    }

    const current = new Map(targets.map((ref) => [`${ref.upstream}\n${ref.url}`, ref]));
    for (const [key, ref] of this.#healthTargets) {
      if (!current.has(key)) {
        this.#targetHealthy.remove({ upstream: ref.upstream, target: ref.url });
        this.#ejections.remove({ upstream: ref.upstream, target: ref.url });
        this.#healthTargets.delete(key);
      }
    }
    for (const [key, ref] of current) {
      if (!this.#healthTargets.has(key)) {
        this.#healthTargets.set(key, ref);
        this.setTargetHealthy(ref.upstream, ref.url, true);
      }
    }
  }

  #registerGauges(): void {
    const gauge = (name: string, help: string, value: () => number) =>
      registerCollectedMetric(this.registry, {
        name,
        help,
        type: 'gauge',
        collect: () => [{ labels: {}, value: value() }],
      });
    const counter = (name: string, help: string, value: () => number) =>
      registerCollectedMetric(this.registry, {
        name,
        help,
        type: 'counter',
        collect: () => [{ labels: {}, value: value() }],
      });

    gauge(
      'loom_proxy_active_connections',
      'Client connections open on the traffic listener.',
      () => this.#activeConnections,
    );
    counter(
      'loom_proxy_connections_total',
      'Client connections accepted on the traffic listener.',
      () => this.#connections,
    );
    gauge(
      'loom_proxy_active_tunnels',
      'WebSocket and other upgraded connections open between a client and an upstream.',
      () => this.#activeTunnels,
    );
    counter(
      'loom_proxy_tunnels_total',
      'WebSocket and other upgraded connections established.',
      () => this.#tunnels,
    );
    counter(
      'loom_proxy_send_timeouts_total',
      'Client connections cut off because they took no bytes for --send-timeout.',
      () => this.#sendTimeouts,
    );
    gauge(
      'loom_proxy_snapshot_version',
      'Version of the snapshot whose table serves requests; 0 before the first one.',
      () => this.#snapshotVersion,
    );
    gauge(
      'loom_proxy_snapshot_routes',
      'Routes in the table that serves requests.',
      () => this.#snapshotRoutes,
    );
    gauge(
      'loom_proxy_routing_tables_alive',
      'Routing tables built and not yet garbage-collected, the one in service included.',
      () => this.tables.alive,
    );
    gauge(
      'loom_proxy_control_plane_connected',
      '1 while the snapshot stream to a control plane is open, else 0.',
      () => (this.#controlPlaneConnected() ? 1 : 0),
    );
  }
}
