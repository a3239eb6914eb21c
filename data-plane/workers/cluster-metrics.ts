import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client';

/** One registry's metrics as `Registry.getMetricsAsJSON` returns them. */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * Metrics about the snapshot stream, which only the primary holds. Workers have the same
 * series in their registries but never update them, so theirs are dropped.
 */
const PRIMARY_METRICS = new Set([
  'loom_proxy_snapshot_version',
  'loom_proxy_snapshot_routes',
  'loom_proxy_control_plane_connected',
  'loom_proxy_snapshots_total',
  'loom_proxy_snapshot_apply_seconds',
  'loom_proxy_table_build_seconds',
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
