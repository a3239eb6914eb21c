import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { pino } from 'pino';

import { ProxyMetrics } from '../../data-plane/observability/proxy-metrics.js';
import { TargetState } from '../../data-plane/upstreams/target-state.js';
import { UNMATCHED_ROUTE } from '../../data-plane/observability/request-metrics.js';
import { parseExposition, sampleValue } from './exposition.js';

async function expose(metrics: ProxyMetrics) {
  return parseExposition(await metrics.registry.metrics());
}

test('request metrics count by status class', async () => {
  const metrics = new ProxyMetrics();
  const route = metrics.requests.forRoute('get-user');
  route.observe('GET', 200, 0.003);
  route.observe('GET', 204, 0.02);
  metrics.requests.observe('get-user', 'GET', 502, 1.5);
  metrics.requests.observe(UNMATCHED_ROUTE, 'BREW', 404, 0.0001);
  metrics.requests.observe('get-user', 'POST', 0, 0.5);

  const families = await expose(metrics);
  const requests = 'loom_proxy_requests_total';
  assert.equal(families.get(requests)?.type, 'counter');
  assert.equal(
    sampleValue(families, requests, { route: 'get-user', method: 'GET', status_class: '2xx' }),
    2,
  );
  assert.equal(
    sampleValue(families, requests, { route: 'get-user', method: 'GET', status_class: '5xx' }),
    1,
  );
  assert.equal(
    sampleValue(families, requests, { route: 'get-user', method: 'POST', status_class: 'none' }),
    1,
  );
  assert.equal(
    sampleValue(families, requests, {
      route: UNMATCHED_ROUTE,
      method: 'OTHER',
      status_class: '4xx',
    }),
    1,
  );
});

test('request duration histogram buckets', async () => {
  const metrics = new ProxyMetrics();
  metrics.requests.observe('a', 'GET', 200, 0.003);
  metrics.requests.observe('a', 'GET', 200, 0.2);
  metrics.requests.observe('a', 'GET', 200, 100);
  metrics.requests.observe('a', 'GET', 200, Number.NaN);

  const families = await expose(metrics);
  const name = 'loom_proxy_request_duration_seconds';
  assert.equal(families.get(name)?.type, 'histogram');
  assert.equal(sampleValue(families, `${name}_bucket`, { route: 'a', le: '0.001' }), 1);
  assert.equal(sampleValue(families, `${name}_bucket`, { route: 'a', le: '0.005' }), 2);
  assert.equal(sampleValue(families, `${name}_bucket`, { route: 'a', le: '0.25' }), 3);
  assert.equal(sampleValue(families, `${name}_bucket`, { route: 'a', le: '60' }), 3);
  assert.equal(sampleValue(families, `${name}_bucket`, { route: 'a', le: '+Inf' }), 4);
  assert.equal(sampleValue(families, `${name}_count`, { route: 'a' }), 4);
  assert.ok(Math.abs((sampleValue(families, `${name}_sum`, { route: 'a' }) ?? 0) - 100.203) < 1e-9);
});

test('retain drops removed routes and targets', async () => {
  const metrics = new ProxyMetrics();
  metrics.retain(
    ['a', 'b'],
    [{ upstream: 'u', origin: 'http://127.0.0.1:1', url: 'http://127.0.0.1:1' }],
  );
  metrics.requests.observe('a', 'GET', 200, 0.01);
  metrics.requests.observe('b', 'GET', 200, 0.01);
  metrics.requests.observe(UNMATCHED_ROUTE, 'GET', 404, 0.01);
  metrics.upstreams.observe('u', 'http://127.0.0.1:1', 0.01);
  metrics.upstreams.error('u', 'http://127.0.0.1:1', 'timeout');
  metrics.retry('b');
  metrics.targetEjected('u', 'http://127.0.0.1:1');

  let families = await expose(metrics);
  assert.equal(sampleValue(families, 'loom_proxy_retries_total', { route: 'b' }), 1);
  assert.equal(
    sampleValue(families, 'loom_proxy_upstream_errors_total', { upstream: 'u', kind: 'timeout' }),
    1,
  );
  assert.equal(sampleValue(families, 'loom_proxy_target_healthy', { upstream: 'u' }), 0);
  assert.equal(sampleValue(families, 'loom_proxy_target_ejections_total', { upstream: 'u' }), 1);

  metrics.retain(
    ['a'],
    [{ upstream: 'v', origin: 'http://127.0.0.1:2', url: 'http://127.0.0.1:2' }],
  );
  families = await expose(metrics);
  assert.equal(sampleValue(families, 'loom_proxy_requests_total', { route: 'b' }), undefined);
  assert.equal(sampleValue(families, 'loom_proxy_requests_total', { route: 'a' }), 1);
  assert.equal(sampleValue(families, 'loom_proxy_requests_total', { route: UNMATCHED_ROUTE }), 1);
  assert.equal(sampleValue(families, 'loom_proxy_retries_total', { route: 'b' }), undefined);
  assert.equal(
    sampleValue(families, 'loom_proxy_upstream_request_duration_seconds_count', { upstream: 'u' }),
    undefined,
  );
  assert.equal(sampleValue(families, 'loom_proxy_target_healthy', { upstream: 'u' }), undefined);
  assert.equal(sampleValue(families, 'loom_proxy_target_healthy', { upstream: 'v' }), 1);
});

test('connection and tunnel gauges', async () => {
  const metrics = new ProxyMetrics();
  metrics.connectionOpened();
  metrics.connectionOpened();
  metrics.connectionClosed();
  metrics.tunnelOpened();
  metrics.watchControlPlane(() => true);
  metrics.snapshotApplied(7, 3, 0.002, 0.001);
  metrics.snapshotRejected();

  const families = await expose(metrics);
  assert.equal(sampleValue(families, 'loom_proxy_active_connections'), 1);
  assert.equal(sampleValue(families, 'loom_proxy_connections_total'), 2);
  assert.equal(sampleValue(families, 'loom_proxy_active_tunnels'), 1);
  assert.equal(sampleValue(families, 'loom_proxy_tunnels_total'), 1);
  assert.equal(sampleValue(families, 'loom_proxy_control_plane_connected'), 1);
  assert.equal(sampleValue(families, 'loom_proxy_snapshot_version'), 7);
  assert.equal(sampleValue(families, 'loom_proxy_snapshot_routes'), 3);
  assert.equal(sampleValue(families, 'loom_proxy_snapshots_total', { result: 'applied' }), 1);
  assert.equal(sampleValue(families, 'loom_proxy_snapshots_total', { result: 'rejected' }), 1);
  assert.equal(sampleValue(families, 'loom_proxy_snapshot_apply_seconds_count'), 1);
  assert.equal(sampleValue(families, 'loom_proxy_table_build_seconds_count'), 1);
  assert.ok((sampleValue(families, 'process_cpu_seconds_total') ?? -1) >= 0);
});

test('table tracker counts collected tables', async () => {
  // The flag makes `gc` available in contexts created afterwards.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const metrics = new ProxyMetrics();
  for (let index = 0; index < 5; index++) metrics.tables.track({ index });
  const kept = { kept: true };
  metrics.tables.track(kept);
  assert.equal(metrics.tables.alive, 6);

  for (let attempt = 0; attempt < 20 && metrics.tables.alive > 1; attempt++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(metrics.tables.alive, 1);
  assert.equal(metrics.tables.built, 6);
  assert.ok(kept.kept);
});

test('target ejection moves health metrics', async () => {
  const metrics = new ProxyMetrics();
  const silent = pino({ level: 'silent' });
  const state = new TargetState('api', 'http://127.0.0.1:9001/base', silent, metrics);
  state.configureEjection({ consecutiveFailures: 1, baseEjectionMs: 50, maxEjectionMs: 1_000 });
  const target = { upstream: 'api', target: 'http://127.0.0.1:9001/base' };

  state.recordFailure();
  const ejected = await expose(metrics);
  assert.equal(sampleValue(ejected, 'loom_proxy_target_ejections_total', target), 1);
  assert.equal(sampleValue(ejected, 'loom_proxy_target_healthy', target), 0);

  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(state.available, true);
  const restored = await expose(metrics);
  assert.equal(sampleValue(restored, 'loom_proxy_target_healthy', target), 1);

  state.setHealthy(false, 'health check failed');
  const unhealthy = await expose(metrics);
  assert.equal(sampleValue(unhealthy, 'loom_proxy_target_healthy', target), 0);
});
