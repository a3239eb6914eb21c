import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { HealthImplementation } from 'grpc-health-check';

import { ControlPlaneMetrics } from '../../control-plane/observability/control-plane-metrics.js';
import { Readiness } from '../../control-plane/observability/readiness.js';
import { SnapshotCache } from '../../control-plane/snapshot/snapshot-cache.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { ProxyRegistry } from '../../control-plane/stream/proxy-registry.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { memoryLogger, waitFor, type LogLine } from './watch-recorder.js';

const PREFIX = '/loom/';
const GRACE_MS = 3_000;

describe('readiness while etcd is busy', { timeout: 60_000 }, () => {
  let etcd: EtcdProcess;
  let store: EtcdStore;
  let cache: SnapshotCache;
  let readiness: Readiness;
  let lines: LogLine[];

  before(async () => {
    etcd = await startEtcd();
    // A long request timeout keeps the commit in flight while etcd is paused.
    store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: PREFIX, requestTimeoutMs: 30_000 });
    await store.commit([
      {
        type: 'put',
        key: `${PREFIX}upstreams/users`,
        value: JSON.stringify({ name: 'users', targets: [{ url: 'http://127.0.0.1:9' }] }),
      },
    ]);
    const memory = memoryLogger();
    lines = memory.lines;
    cache = new SnapshotCache({ store, prefix: PREFIX, logger: memory.logger });
    await cache.start();
    await waitFor('a published snapshot', () => cache.current !== undefined);
    readiness = new Readiness({
      store,
      cache,
      health: new HealthImplementation({ '': 'NOT_SERVING' }),
      metrics: new ControlPlaneMetrics({ registry: new ProxyRegistry(), current: () => undefined }),
      logger: memory.logger,
      busyStoreGraceMs: GRACE_MS,
    });
    assert.equal((await readiness.check()).ready, true);
  });

  after(async () => {
    etcd?.thaw();
    await cache?.stop();
    await store?.close();
    await etcd?.stop();
  });

  /** Starts a commit and then pauses etcd, so the commit is in flight until `thaw`. */
  function commitWhileFrozen(name: string): Promise<number | Error> {
    const commit = store
      .commit([{ type: 'put', key: `${PREFIX}routes/${name}`, value: '{}' }])
      .catch((error: unknown) => error as Error);
    etcd.freeze();
    return commit;
  }

  it('stays ready during own commit', async () => {
    const commit = commitWhileFrozen('during-commit');
    assert.equal(store.commitsInFlight, 1);

    const result = await readiness.check();
    assert.equal(result.ready, true, result.reason);
    assert.ok(lines.some((line) => line.msg === 'store busy with own commit'));
    assert.ok(!lines.some((line) => line.msg === 'control plane not ready'));

    etcd.thaw();
    assert.equal(typeof (await commit), 'number');
    assert.equal((await readiness.check()).ready, true);
    assert.ok(lines.some((line) => line.msg === 'store no longer busy with own commit'));
  });

  it('reports frozen etcd without commit', async () => {
    etcd.freeze();
    try {
      const result = await readiness.check();
      assert.equal(result.ready, false);
      assert.match(result.reason ?? '', /^store unreachable: no response within/);
    } finally {
      etcd.thaw();
    }
    assert.equal((await readiness.check()).ready, true);
  });

  it('stays ready until commit deadline', async () => {
    assert.equal((await readiness.check()).ready, true);
    const commit = commitWhileFrozen('past-grace');
    try {
      assert.equal((await readiness.check()).ready, true);
      // The grace counts from the last read that finished in time, and the commit's deadline
      // (30 s of request timeout) lies beyond it.
      await sleep(GRACE_MS);
      const result = await readiness.check();
      assert.equal(store.commitsInFlight, 1);
      assert.ok(store.commitDeadline! > Date.now());
      assert.equal(result.ready, true, result.reason);
    } finally {
      etcd.thaw();
    }
    await commit;
    assert.equal((await readiness.check()).ready, true);
  });

  it('reports frozen etcd after commit deadline', async () => {
    const shortStore = new EtcdStore({
      endpoints: [etcd.endpoint],
      prefix: PREFIX,
      requestTimeoutMs: 2_000,
    });
    const memory = memoryLogger();
    const shortReadiness = new Readiness({
      store: shortStore,
      cache,
      health: new HealthImplementation({ '': 'NOT_SERVING' }),
      metrics: new ControlPlaneMetrics({ registry: new ProxyRegistry(), current: () => undefined }),
      logger: memory.logger,
      busyStoreGraceMs: 1_000,
    });
    try {
      assert.equal((await shortReadiness.check()).ready, true);
      const commit = shortStore
        .commit([{ type: 'put', key: `${PREFIX}routes/past-deadline`, value: '{}' }])
        .catch((error: unknown) => error as Error);
      etcd.freeze();
      try {
        const deadline = shortStore.commitDeadline!;
        assert.ok(deadline > Date.now());
        assert.ok((await commit) instanceof Error);
        assert.equal(shortStore.commitsInFlight, 0);
        assert.equal(shortStore.commitDeadline, undefined);
        const result = await shortReadiness.check();
        assert.equal(result.ready, false);
        assert.match(result.reason ?? '', /^store unreachable: no response within/);
      } finally {
        etcd.thaw();
      }
      assert.equal((await shortReadiness.check()).ready, true);
    } finally {
      await shortStore.close();
    }
  });
});
