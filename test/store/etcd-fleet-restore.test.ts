import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { memoryLogger, waitFor } from './watch-recorder.js';

describe('etcd fleet records after a restore', { timeout: 60_000 }, () => {
  let etcd: EtcdProcess;
  let dir: string;

  before(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), 'loom-fleet-restore-'));
  });

  after(async () => {
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('watch back from a restore finds records', async () => {
    const { logger, lines } = memoryLogger();
    // The periodic check runs only after 10 minutes, so only the watch's return can find the records.
    const store = new EtcdStore({
      endpoints: [etcd.endpoint],
      prefix: '/loom/',
      logger,
      fleetLeaseCheckMs: 600_000,
      watchBackoffMaxMs: 200,
    });
    const lost: (string[] | undefined)[] = [];
    store.fleet.onLost((proxies) => lost.push(proxies));
    try {
      const { revision } = await store.range('/loom/');
      const watch = store.watch('/loom/', revision + 1, {
        onBatch: () => undefined,
        onError: () => undefined,
      });
      await store.fleet.publish('a', [{ proxy: 'p1', value: 'connected' }]);
      const backup = join(dir, 'backup.db');
      await etcd.saveSnapshot(backup);
      await store.fleet.publish('a', [{ proxy: 'p1', value: 'gone' }]);

      await etcd.restoreSnapshot(backup);
      await waitFor('the restored record to be found', () => lost.length > 0, 30_000);

      assert.deepEqual(lost, [['p1']]);
      assert.ok(
        lines.some((line) => line.msg.startsWith('fleet records changed outside')),
        'no log line about the changed records',
      );
      await watch.cancel();
    } finally {
      await store.close();
    }
  });
});
