import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Etcd3 } from 'etcd3';

import { FleetPublisher } from '../../control-plane/fleet/fleet-publisher.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { ProxyRegistry } from '../../control-plane/stream/proxy-registry.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { memoryLogger, waitFor } from './watch-recorder.js';
import { testStream } from '../helpers/proxy-stream.js';

/** Polls `ready` every 20 ms until it resolves true, for at most 5 s. */
async function waitUntil(ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error('timed out after 5000 ms');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const ROUTE = {
  key: '/loom/routes/users',
  value: JSON.stringify({ name: 'users', paths: ['/users'], upstream: 'users' }),
};

describe('etcd fleet records', { timeout: 60_000 }, () => {
  let etcd: EtcdProcess;
  let raw: Etcd3;
  let prefixNumber = 0;

  before(async () => {
    etcd = await startEtcd();
    raw = new Etcd3({ hosts: etcd.endpoint });
  });

  after(async () => {
    raw.close();
    await etcd.stop();
  });

  /** Opens a store on its own prefix, so tests do not see each other's keys. */
  function openStore(leaseCheckMs = 5_000): { store: EtcdStore; prefix: string } {
    prefixNumber += 1;
    const prefix = `/fleet-${prefixNumber}/`;
    const store = new EtcdStore({
      endpoints: [etcd.endpoint],
      prefix,
      logger: memoryLogger().logger,
      fleetLeaseCheckMs: leaseCheckMs,
    });
    return { store, prefix };
  }

  function route(prefix: string): { type: 'put'; key: string; value: string } {
    return { type: 'put', key: ROUTE.key.replace('/loom/', prefix), value: ROUTE.value };
  }

  it('reads what every replica wrote', async () => {
    const { store: first, prefix } = openStore();
    const second = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    try {
      await first.fleet.publish('a', [{ proxy: 'p1', value: 'one' }]);
      await second.fleet.publish('b', [
        { proxy: 'p2', value: 'two' },
        { proxy: 'with/slash', value: 'three' },
      ]);
      const records = await first.fleet.read();
      assert.deepEqual(
        records.map((record) => `${record.replica} ${record.proxy} ${record.value}`).sort(),
        ['a p1 one', 'b p2 two', 'b with/slash three'],
      );
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('publish deletes removed proxies', async () => {
    const { store } = openStore();
    try {
      await store.fleet.publish('a', [
        { proxy: 'p1', value: 'one' },
        { proxy: 'p2', value: 'two' },
      ]);
      await store.fleet.publish('a', [{ proxy: 'p3', value: 'three' }], ['p1']);
      const proxies = (await store.fleet.read()).map((record) => record.proxy).sort();
      assert.deepEqual(proxies, ['p2', 'p3']);
    } finally {
      await store.close();
    }
  });

  it('a pruned proxy loses its record', async () => {
    const { store } = openStore();
    const registry = new ProxyRegistry();
    const publisher = new FleetPublisher({
      registry,
      fleet: store.fleet,
      replica: 'a',
      controlPlane: 'cp-a:7400',
      logger: memoryLogger().logger,
      delayMs: 10,
    });
    publisher.start();
    try {
      const first = testStream('10.0.0.1:8080');
      registry.connect('p1', first, 'e', 1);
      registry.connect('p2', testStream('10.0.0.2:8080'), 'e', 1);
      registry.disconnect('p1', first);
      const proxies = async () => (await store.fleet.read()).map((record) => record.proxy).sort();
      await waitUntil(async () => (await proxies()).length === 2);

      assert.equal(registry.prune(Date.now() + 10_000, 1_000), 1);
      await waitUntil(async () => (await proxies()).length === 1);
      assert.deepEqual(await proxies(), ['p2']);
    } finally {
      await publisher.stop();
      await store.close();
    }
  });

  it('writes 250 records in transactions etcd accepts', async () => {
    const { store } = openStore();
    try {
      const records = Array.from({ length: 250 }, (_, i) => ({ proxy: `p${i}`, value: `${i}` }));
      await store.fleet.publish('a', records);
      assert.equal((await store.fleet.read()).length, 250);
    } finally {
      await store.close();
    }
  });

  it('record writes move neither the version nor a conditional commit', async () => {
    const { store, prefix } = openStore();
    try {
      const version = await store.commit([route(prefix)]);
      for (let i = 0; i < 5; i++) {
        await store.fleet.publish('a', [{ proxy: 'p1', value: `ack ${i}` }]);
      }
      assert.equal((await store.range(prefix)).revision, version);

      const next = await store.commit(
        [{ type: 'put', key: `${prefix}routes/other`, value: ROUTE.value }],
        { ifRevision: version, prefix },
      );
      assert.ok(next > version);
    } finally {
      await store.close();
    }
  });

  it('close deletes the records and takes no revision for the lease', async () => {
    const { store, prefix } = openStore();
    const reader = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    try {
      const version = await store.commit([route(prefix)]);
      await store.fleet.publish('a', [{ proxy: 'p1', value: 'one' }]);
      await store.close();

      assert.deepEqual(await reader.fleet.read(), []);
      assert.equal((await reader.range(prefix)).revision, version);
    } finally {
      await reader.close();
    }
  });

  it('a revoked lease is found and the records can be written again', async () => {
    const { store } = openStore(100);
    let lost = 0;
    store.fleet.onLost(() => (lost += 1));
    try {
      await store.fleet.publish('a', [{ proxy: 'p1', value: 'one' }]);
      const { leases } = await raw.leaseClient.leaseLeases();
      for (const lease of leases) await raw.leaseClient.leaseRevoke({ ID: lease.ID });
      assert.deepEqual(await store.fleet.read(), []);

      await waitFor('the lost lease', () => lost === 1);
      await store.fleet.publish('a', [{ proxy: 'p1', value: 'again' }]);
      assert.deepEqual(
        (await store.fleet.read()).map((record) => record.value),
        ['again'],
      );
    } finally {
      await store.close();
    }
  });
});
