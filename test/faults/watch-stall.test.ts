import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Etcd3 } from 'etcd3';
import { pino } from 'pino';

import { LoomError } from '../../common/errors.js';
import { ControlPlane } from '../../control-plane/control-plane.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import type { Watch, WatchBatch } from '../../control-plane/store/store.js';
import { waitFor } from '../../scripts/processes.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { applyConfig, fixtureConfig } from './harness.js';
import { TcpRelay } from './relay.js';

const silent = pino({ enabled: false });
/** Port of the fixture upstream; nothing listens there, because no request is proxied. */
const UNUSED_UPSTREAM_PORT = 9;
const CHECK_INTERVAL_MS = 200;

/** Writes `key` the way an operator would, with etcdctl (API v3). */
function etcdctlPut(endpoint: string, key: string, value: string): Promise<void> {
  return runEtcdctl([`--endpoints=${endpoint}`, 'put', key, value]);
}

/** A watch of `prefix` through a relay, whose connection the test can freeze. */
class RelayedWatch {
  readonly batches: WatchBatch[] = [];
  readonly errors: Error[] = [];
  readonly store: EtcdStore;
  #watch: Watch | undefined;

  constructor(relay: TcpRelay, prefix: string) {
    this.store = new EtcdStore({
      endpoints: [`http://${relay.address}`],
      prefix,
      logger: silent,
      watchCheckIntervalMs: CHECK_INTERVAL_MS,
      requestTimeoutMs: 2_000,
    });
  }

  /** Opens the read connection, then the watch connection, which the relay accepts last. */
  async start(prefix: string, fromRevision: number): Promise<void> {
    await this.store.range(prefix);
    this.#watch = this.store.watch(prefix, fromRevision, {
      onBatch: (batch) => this.batches.push(batch),
      onError: (error) => this.errors.push(error),
    });
  }

  async close(): Promise<void> {
    await this.#watch?.cancel();
    await this.store.close();
  }
}

function assertStalled(errors: Error[]): void {
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof LoomError);
  assert.equal(errors[0].code, 'LOOM_STORE_UNAVAILABLE');
  assert.equal(errors[0].retryable, true);
  assert.match(errors[0].message, /delivered none/);
}

describe('etcd watch stall detection', { timeout: 90_000, concurrency: 1 }, () => {
  let etcd: EtcdProcess;
  let foreign: Etcd3;

  before(async () => {
    etcd = await startEtcd();
    foreign = new Etcd3({ hosts: [etcd.endpoint] });
  });

  after(async () => {
    foreign?.close();
    await etcd?.stop();
  });

  test('etcdctl put ends stalled watch', async () => {
    const relay = await TcpRelay.start(etcd.clientPort);
    const watch = new RelayedWatch(relay, '/put/');
    try {
      const start = await foreign.put('/put/routes/a').value('{}').exec();
      await watch.start('/put/', Number(start.header.revision) + 1);
      await foreign.put('/put/routes/b').value('{}');
      await waitFor('first batch', 10_000, () => watch.batches.length === 1);

      relay.freezeNewest();
      await etcdctlPut(etcd.endpoint, '/put/routes/c', '{}');
      await waitFor('stall to be reported', 10_000, () => watch.errors.length > 0);
      assertStalled(watch.errors);
      assert.equal(watch.batches.length, 1);

      // A new watch from the last delivered revision runs on a new connection and catches up.
      const resumed: WatchBatch[] = [];
      const next = watch.store.watch('/put/', watch.batches[0].revision + 1, {
        onBatch: (batch) => resumed.push(batch),
        onError: () => undefined,
      });
      await waitFor('resumed watch to deliver c', 10_000, () => resumed.length === 1);
      assert.equal(resumed[0].events[0].key, '/put/routes/c');
      await next.cancel();
    } finally {
      await watch.close();
      await relay.close();
    }
  });

  test('foreign delete ends stalled watch', async () => {
    const relay = await TcpRelay.start(etcd.clientPort);
    const watch = new RelayedWatch(relay, '/delete/');
    try {
      await foreign.put('/delete/routes/a').value('{}');
      const start = await foreign.put('/delete/routes/b').value('{}').exec();
      await watch.start('/delete/', Number(start.header.revision) + 1);
      await foreign.put('/delete/routes/c').value('{}');
      await waitFor('first batch', 10_000, () => watch.batches.length === 1);

      relay.freezeNewest();
      // A delete leaves no mod revision behind; only the key count shows it.
      await foreign.delete().key('/delete/routes/a');
      await waitFor('stall to be reported', 10_000, () => watch.errors.length > 0);
      assertStalled(watch.errors);
      assert.equal(watch.batches.length, 1);
    } finally {
      await watch.close();
      await relay.close();
    }
  });

  test('healthy watch ignores other prefixes', async () => {
    const relay = await TcpRelay.start(etcd.clientPort);
    const watch = new RelayedWatch(relay, '/quiet/');
    try {
      const start = await foreign.put('/quiet/routes/a').value('{}').exec();
      await watch.start('/quiet/', Number(start.header.revision) + 1);

      // Writes elsewhere move etcd's revision past the watch's for several check intervals.
      for (let i = 0; i < 10; i++) {
        await foreign.put(`/elsewhere/key-${i}`).value('{}');
        await sleep(CHECK_INTERVAL_MS / 2);
      }
      await foreign.put('/quiet/routes/b').value('{}');
      await waitFor('batch of b', 10_000, () => watch.batches.length === 1);
      for (let i = 10; i < 20; i++) {
        await foreign.put(`/elsewhere/key-${i}`).value('{}');
        await sleep(CHECK_INTERVAL_MS / 2);
      }

      assert.deepEqual(watch.errors, []);
      assert.equal(watch.batches[0].events[0].key, '/quiet/routes/b');
    } finally {
      await watch.close();
      await relay.close();
    }
  });

  test('control plane catches up after stall', async () => {
    const relay = await TcpRelay.start(etcd.clientPort);
    const lines: { msg?: string }[] = [];
    const logger = pino(
      { level: 'info' },
      { write: (line: string) => lines.push(JSON.parse(line)) },
    );
    const controlPlane = await ControlPlane.start({
      listen: '127.0.0.1:0',
      etcdEndpoints: [`http://${relay.address}`],
      dataDir: '',
      logger,
      etcdWatchCheckIntervalMs: CHECK_INTERVAL_MS,
    });
    const address = `127.0.0.1:${controlPlane.port}`;
    const snapshot = () => controlPlane.cache.current?.snapshot;
    try {
      const version = await applyConfig(address, fixtureConfig(UNUSED_UPSTREAM_PORT, 1));
      await waitFor('snapshot of the apply', 10_000, () => (snapshot()?.version ?? 0) >= version);
      const resyncs = await resyncCount(controlPlane);

      // The read connection opened first; the watch connection is the newest.
      assert.equal(relay.open, 2);
      relay.freezeNewest();
      const stored = await foreign.get('/loom/routes/r0').string();
      assert.ok(stored, 'route r0 is stored');
      const route = { ...JSON.parse(stored), name: 'foreign', paths: ['/foreign/*rest'] };
      await etcdctlPut(etcd.endpoint, '/loom/routes/foreign', JSON.stringify(route));

      await waitFor('snapshot with the foreign route', 15_000, () => {
        return snapshot()?.routes.some((item) => item.name === 'foreign') ?? false;
      });
      assert.ok((snapshot()?.version ?? 0) > version);
      assert.equal(lines.filter((line) => line.msg === 'etcd watch stalled').length, 1);
      assert.equal(lines.filter((line) => line.msg === 'etcd watch connection replaced').length, 1);
      assert.ok((await resyncCount(controlPlane)) > resyncs);
    } finally {
      await controlPlane.stop();
      await relay.close();
    }
  });
});

async function resyncCount(controlPlane: ControlPlane): Promise<number> {
  const metric = controlPlane.metrics.registry.getSingleMetric(
    'loom_control_plane_store_resyncs_total',
  );
  const values = (await metric?.get())?.values ?? [];
  return values[0]?.value ?? 0;
}
