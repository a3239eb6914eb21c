import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ControlPlaneMetrics } from '../../control-plane/observability/control-plane-metrics.js';
import { CommitTimes } from '../../control-plane/snapshot/commit-times.js';
import { ProxyRegistry } from '../../control-plane/stream/proxy-registry.js';

const EPOCH = 'epoch-a';

function setup(): { metrics: ControlPlaneMetrics; commitTimes: CommitTimes } {
  const commitTimes = new CommitTimes();
  const metrics = new ControlPlaneMetrics({
    registry: new ProxyRegistry(),
    current: () => undefined,
    commitTimes,
  });
  return { metrics, commitTimes };
}

async function lagSamples(metrics: ControlPlaneMetrics): Promise<{ count: number; sum: number }> {
  const metric = metrics.registry.getSingleMetric('loom_control_plane_watch_lag_seconds');
  // Histogram values carry the name of their series (`_bucket`, `_sum`, `_count`).
  const values = ((await metric?.get())?.values ?? []) as { metricName?: string; value: number }[];
  const value = (name: string) => values.find((item) => item.metricName === name)?.value ?? 0;
  return {
    count: value('loom_control_plane_watch_lag_seconds_count'),
    sum: value('loom_control_plane_watch_lag_seconds_sum'),
  };
}

describe('watch lag metric', () => {
  test('commit before delivery is measured', async () => {
    const { metrics, commitTimes } = setup();
    commitTimes.record(EPOCH, 5, Date.now() - 2_000);
    metrics.watchDelivered(EPOCH, 5);
    metrics.commitConfirmed(EPOCH, 5, Date.now() - 2_000);

    const samples = await lagSamples(metrics);
    assert.equal(samples.count, 1);
    assert.ok(samples.sum >= 2, `lag ${samples.sum} s`);
  });

  test('delivery before commit counts zero', async () => {
    const { metrics } = setup();
    metrics.watchDelivered(EPOCH, 7);
    assert.equal((await lagSamples(metrics)).count, 0);

    metrics.commitConfirmed(EPOCH, 7, Date.now() + 1_000);
    metrics.commitConfirmed(EPOCH, 7, Date.now() + 1_000);
    const samples = await lagSamples(metrics);
    assert.equal(samples.count, 1);
    assert.equal(samples.sum, 0);
  });

  test('delete confirmation matches any epoch', async () => {
    const { metrics } = setup();
    metrics.watchDelivered(EPOCH, 8);
    metrics.commitConfirmed(undefined, 8, Date.now());
    assert.equal((await lagSamples(metrics)).count, 1);
  });

  test('other epoch or revision ignored', async () => {
    const { metrics } = setup();
    metrics.watchDelivered(EPOCH, 9);
    metrics.commitConfirmed('epoch-b', 9, Date.now());
    metrics.commitConfirmed(EPOCH, 10, Date.now());
    // Revisions committed elsewhere are delivered but never confirmed here.
    metrics.watchDelivered(EPOCH, 11);
    assert.equal((await lagSamples(metrics)).count, 0);
  });
});
