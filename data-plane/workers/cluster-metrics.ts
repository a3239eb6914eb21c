import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client';

import { withTimeout } from '../../common/timers.js';
import type { Logger } from '../../common/logger.js';
import { registerCollectedMetric } from '../observability/collected-metric.js';
import type { WorkerPool, WorkerSlot, WorkerState } from './worker-pool.js';

/** Maximum wait for one worker's metrics on a scrape, in milliseconds. */
const METRICS_TIMEOUT_MS = 2_000;

/** One registry's metrics as `Registry.getMetricsAsJSON` returns them. */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * Metrics about the snapshot stream and the worker processes, which only the primary holds.
 * Workers have the snapshot series in their registries but never update them, so theirs are
 * dropped.
 */
const PRIMARY_METRICS = new Set([
  'loom_proxy_snapshot_version',
  'loom_proxy_snapshot_routes',
  'loom_proxy_control_plane_connected',
  'loom_proxy_snapshots_total',
  'loom_proxy_snapshot_apply_seconds',
  'loom_proxy_table_build_seconds',
  'loom_proxy_workers',
  'loom_proxy_worker_restarts_total',
]);

/**
 * Metrics that are not summed across workers. Each worker sets a target's health gauge on
 * its own, so the merged gauge is 1 only while every worker has the target in rotation.
 */
const AGGREGATORS: Record<string, string> = {
  loom_proxy_target_healthy: 'min',
};

/**
 * Merges the metrics of the primary and its workers into one registry for `GET /metrics`.
 * Request, connection and upstream metrics come from the workers and are summed. Snapshot
 * metrics come from the primary alone. Process metrics (`process_*`, `nodejs_*`) of every
 * process are merged by prom-client's own rules, which sum most of them.
 */
export function aggregateClusterMetrics(primary: MetricsJson, workers: MetricsJson[]): Registry {
  const own = primary.filter(
    (metric) => PRIMARY_METRICS.has(metric.name) || !metric.name.startsWith('loom_proxy_'),
  );
  const fromWorkers = workers.map((metrics) =>
    metrics.filter((metric) => !PRIMARY_METRICS.has(metric.name)),
  );
  const all = [own, ...fromWorkers].map((metrics) =>
    metrics.map((metric) => {
      const aggregator = AGGREGATORS[metric.name];
      return aggregator === undefined ? metric : { ...metric, aggregator };
    }),
  );
  return AggregatorRegistry.aggregate(all);
}

const WORKER_STATES: readonly WorkerState[] = ['starting', 'syncing', 'listening', 'exited'];

/**
 * Registers the primary's worker metrics, read from `slots` at scrape time:
 * `loom_proxy_workers{state}` counts the slots in each state, and
 * `loom_proxy_worker_restarts_total{worker}` counts each slot's restarts after an unexpected exit.
 */
export function registerWorkerPoolMetrics(registry: Registry, slots: readonly WorkerSlot[]): void {
  registerCollectedMetric(registry, {
    name: 'loom_proxy_workers',
    help: 'Worker slots by state: starting, syncing (applying the snapshot), listening or exited.',
    type: 'gauge',
    collect: () =>
      WORKER_STATES.map((state) => ({
        labels: { state },
        value: slots.filter((slot) => slot.state === state).length,
      })),
  });
  registerCollectedMetric(registry, {
    name: 'loom_proxy_worker_restarts_total',
    help: 'Workers forked again after one exited unexpectedly, by slot.',
    type: 'counter',
    collect: () =>
      slots.map((slot) => ({ labels: { worker: String(slot.index) }, value: slot.restarts })),
  });
}

/**
 * Requests the metrics of every running worker of `pool` and merges them with the primary's
 * `registry` by {@link aggregateClusterMetrics}. A worker that has not replied within 2 s is
 * left out of this scrape, with a warning.
 */
export async function collectClusterMetrics(
  pool: WorkerPool,
  registry: Registry,
  logger: Logger,
): Promise<Registry> {
  const workers = await collectWorkerMetrics(pool, logger);
  const own = await registry.getMetricsAsJSON();
  return aggregateClusterMetrics(own as MetricsJson, workers);
}

/** Requests every running worker's metrics; a worker that has not replied in time is left out. */
async function collectWorkerMetrics(pool: WorkerPool, logger: Logger): Promise<MetricsJson[]> {
  const running = pool.slots.filter(
    (slot) => slot.state === 'listening' || slot.state === 'syncing',
  );
  const results = await Promise.allSettled(
    running.map((slot) =>
      withTimeout(pool.request(slot, { type: 'metrics' }), METRICS_TIMEOUT_MS, 'worker metrics'),
    ),
  );
  const metrics: MetricsJson[] = [];
  results.forEach((result, i) => {
    if (result.status === 'fulfilled') {
      metrics.push(result.value);
    } else {
      logger.warn(
        { worker: running[i].index, err: result.reason as Error },
        'worker metrics left out of a scrape',
      );
    }
  });
  return metrics;
}
