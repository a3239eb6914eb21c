import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Etcd3 } from 'etcd3';
import { pino } from 'pino';

import { AdminClient } from '../../cli/admin-client.js';
import { LoomError } from '../../common/errors.js';
import { ControlPlane } from '../../control-plane/control-plane.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import type { WatchBatch } from '../../control-plane/store/store.js';
import { waitFor } from '../../scripts/processes.js';
import { startEtcd, startEtcdCluster, type EtcdProcess } from '../helpers/etcd.js';
import { httpGet } from '../helpers/net.js';
import {
  applyConfig,
  fixtureConfig,
  readyz,
  startUpstream,
  waitForVersion,
  Workspace,
} from './harness.js';
import { TcpRelay } from './relay.js';

const silent = pino({ enabled: false });

describe('etcd faults', { timeout: 150_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;

  before(async () => {
    upstream = await startUpstream('echo');
  });

  after(() => {
    upstream.server.close();
  });

  test('leader killed during applies', async () => {
    const cluster = await startEtcdCluster(3);
    const ws = new Workspace();
    try {
      const cp = await ws.controlPlane('cp', ['--etcd', cluster.endpoints.join(',')]);
      const proxy = await ws.proxy('proxy', [cp.address]);
      const acknowledged: number[] = [];
      let failures = 0;
      let killedAt = 0;
      let resumedAfterMs: number | undefined;
      const deadline = Date.now() + 40_000;

      // Each apply adds route r{i}; a failed apply is retried until it is acknowledged.
      for (let i = 1; i <= 30 && Date.now() < deadline;) {
        if (i === 10 && killedAt === 0) {
          await (await cluster.leader()).kill();
          killedAt = performance.now();
        }
        try {
          await applyConfig(cp.address, fixtureConfig(upstream.port, i));
          if (killedAt > 0 && resumedAfterMs === undefined) {
            resumedAfterMs = performance.now() - killedAt;
          }
          acknowledged.push(i);
          i += 1;
        } catch {
          failures += 1;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }

      assert.equal(acknowledged.length, 30, ws.logs());
      assert.notEqual(resumedAfterMs, undefined);
      const survivors = cluster.members.filter((member) => member.running);
      const client = new Etcd3({ hosts: survivors.map((member) => member.endpoint) });
      try {
        const stored = await client.getAll().prefix('/loom/routes/').keys();
        for (const i of acknowledged) {
          assert.ok(stored.includes(`/loom/routes/r${i - 1}`), `route r${i - 1} lost`);
        }
      } finally {
        client.close();
      }
      // A read may still go to the killed member once, so it is retried like the applies.
      let finalVersion = 0;
      await waitFor('a read through the control plane', 10_000, async () => {
        const admin = new AdminClient(cp.address);
        finalVersion = (await admin.getConfig().finally(() => admin.close())).version;
        return true;
      });
      await waitForVersion(proxy.adminPort, finalVersion, 20_000);
      process.stdout.write(
        `# leader kill: writes resumed after ${Math.round(resumedAfterMs ?? 0)} ms, ` +
          `${failures} failed attempts, ${acknowledged.length} applies acknowledged\n`,
      );
    } finally {
      await ws.close();
      await cluster.stop();
    }
  });

  test('restart and compaction while disconnected', async () => {
    const etcd = await startEtcd();
    const relay = await TcpRelay.start(etcd.clientPort);
    const ws = new Workspace();
    try {
      const behind = await ws.controlPlane('cp-behind-relay', [
        '--etcd',
        `http://${relay.address}`,
      ]);
      const direct = await ws.controlPlane('cp-direct', ['--etcd', etcd.endpoint]);
      const proxy = await ws.proxy('proxy', [behind.address]);
      const first = await applyConfig(direct.address, fixtureConfig(upstream.port, 6));
      await waitForVersion(proxy.adminPort, first);

      relay.cut();
      // Routes r3..r5 go away and r0new..r2new arrive while the control plane cannot see etcd.
      await applyConfig(direct.address, fixtureConfig(upstream.port, 3));
      const merged = fixtureConfig(upstream.port, 3);
      merged.routes.push(
        ...fixtureConfig(upstream.port, 3, 'new').routes.filter((r) => r.name !== 'hold'),
      );
      await applyConfig(direct.address, merged);
      await etcd.restart();
      await compactAll(etcd);
      relay.heal();

      const admin = new AdminClient(direct.address);
      const fresh = await admin.getConfig().finally(() => admin.close());
      await waitFor('proxy to serve r0new', 20_000, async () => {
        return (await httpGet(`http://${proxy.address}/r0new/x`)).status === 200;
      });
      const served = new Set(fresh.routes.map((route) => route.name));
      for (const name of ['hold', 'r0', 'r1', 'r2', 'r0new', 'r1new', 'r2new']) {
        assert.ok(served.has(name), `fresh read lacks ${name}`);
        assert.equal((await httpGet(`http://${proxy.address}/${name}/x`)).status, 200, name);
      }
      for (const name of ['r3', 'r4', 'r5']) {
        assert.equal((await httpGet(`http://${proxy.address}/${name}/x`)).status, 404, name);
      }
      assert.equal(served.size, 7);
    } finally {
      await ws.close();
      await relay.close();
      await etcd.stop();
    }
  });

  test('stalled watch is restarted', async () => {
    const etcd = await startEtcd();
    const relay = await TcpRelay.start(etcd.clientPort);
    let stalls = 0;
    const store = new EtcdStore({
      endpoints: [`http://${relay.address}`],
      logger: silent,
      watchCheckIntervalMs: 200,
      requestTimeoutMs: 2_000,
      onWatchStall: () => stalls++,
    });
    const writer = new EtcdStore({ endpoints: [etcd.endpoint], logger: silent });
    try {
      const start = await writer.commit([{ type: 'put', key: '/loom/routes/a', value: '{}' }]);
      await store.range('/loom/');
      const errors: Error[] = [];
      const batches: WatchBatch[] = [];
      const watch = store.watch('/loom/', start + 1, {
        onBatch: (batch) => batches.push(batch),
        onError: (error) => errors.push(error),
      });
      await writer.commit([{ type: 'put', key: '/loom/routes/b', value: '{}' }]);
      await waitFor('first batch', 10_000, () => batches.length === 1);

      relay.freezeNewest();
      await writer.commit([{ type: 'put', key: '/loom/routes/c', value: '{}' }]);
      await waitFor('stall to be reported', 10_000, () => errors.length === 1);
      assert.ok(errors[0] instanceof LoomError);
      assert.equal(errors[0].code, 'LOOM_STORE_UNAVAILABLE');
      assert.equal(errors[0].retryable, true);
      assert.match(errors[0].message, /delivered none/);
      assert.equal(batches.length, 1);
      assert.equal(stalls, 1);
      await watch.cancel();

      // A new watch runs on a new connection and catches up.
      const resumed: WatchBatch[] = [];
      const next = store.watch('/loom/', batches[0].revision + 1, {
        onBatch: (batch) => resumed.push(batch),
        onError: () => undefined,
      });
      await waitFor('resumed watch to deliver c', 10_000, () => resumed.length === 1);
      assert.equal(resumed[0].events[0].key, '/loom/routes/c');
      await next.cancel();
    } finally {
      await store.close();
      await writer.close();
      await relay.close();
      await etcd.stop();
    }
  });

  test('resumed watch calls onResumed', async () => {
    const etcd = await startEtcd();
    const relay = await TcpRelay.start(etcd.clientPort);
    const store = new EtcdStore({ endpoints: [`http://${relay.address}`], logger: silent });
    const writer = new EtcdStore({ endpoints: [etcd.endpoint], logger: silent });
    try {
      const start = await writer.commit([{ type: 'put', key: '/loom/routes/a', value: '{}' }]);
      let resumed = 0;
      const batches: WatchBatch[] = [];
      const watch = store.watch('/loom/', start + 1, {
        onBatch: (batch) => batches.push(batch),
        onError: (error) => assert.fail(error),
        onResumed: () => resumed++,
      });
      await writer.commit([{ type: 'put', key: '/loom/routes/b', value: '{}' }]);
      await waitFor('first batch', 10_000, () => batches.length === 1);
      assert.equal(resumed, 0);

      relay.reset();
      await waitFor('watch to resume', 15_000, () => resumed === 1);
      // The resumed stream still delivers, so callers that trust it lose nothing.
      await writer.commit([{ type: 'put', key: '/loom/routes/c', value: '{}' }]);
      await waitFor('batch after the resume', 10_000, () => batches.length === 2);
      assert.equal(batches[1].events[0].key, '/loom/routes/c');
      assert.equal(resumed, 1);
      await watch.cancel();
    } finally {
      await store.close();
      await writer.close();
      await relay.close();
      await etcd.stop();
    }
  });

  test('etcd unreachable keeps streaming', async () => {
    const etcd = await startEtcd();
    const relay = await TcpRelay.start(etcd.clientPort);
    const controlPlane = await ControlPlane.start({
      listen: '127.0.0.1:0',
      etcdEndpoints: [`http://${relay.address}`],
      dataDir: '',
      logger: silent,
      etcdWatchCheckIntervalMs: 200,
    });
    const ws = new Workspace();
    const address = `127.0.0.1:${controlPlane.port}`;
    try {
      const version = await applyConfig(address, fixtureConfig(upstream.port, 2));
      assert.equal(controlPlane.storeReachable, true);
      // The apply returns at commit; the watch may deliver it a moment later.
      await waitFor('control plane to publish the apply', 10_000, () => {
        return (controlPlane.cache.current?.snapshot.version ?? 0) >= version;
      });

      relay.cut();
      await waitFor('store to read as unreachable', 15_000, () => !controlPlane.storeReachable);
      // A proxy that connects only now still gets the last snapshot.
      const proxy = await ws.proxy('late-proxy', [address]);
      await waitForVersion(proxy.adminPort, version);
      await assert.rejects(applyConfig(address, fixtureConfig(upstream.port, 3)), (error) => {
        assert.ok(error instanceof LoomError);
        assert.equal(error.code, 'LOOM_STORE_UNAVAILABLE');
        assert.match(error.message, /etcd at .* (is unreachable|failed)/);
        return true;
      });
      assert.equal((await readyz(proxy.adminPort)).body.version, version);

      relay.heal();
      await waitFor('store to read as reachable', 15_000, () => controlPlane.storeReachable);
      const next = await applyConfig(address, fixtureConfig(upstream.port, 3));
      await waitForVersion(proxy.adminPort, next);
    } finally {
      await ws.close();
      await controlPlane.stop();
      await relay.close();
      await etcd.stop();
    }
  });
});

/** Compacts etcd at its current revision and returns that revision. */
async function compactAll(etcd: EtcdProcess): Promise<number> {
  const client = new Etcd3({ hosts: [etcd.endpoint] });
  try {
    const status = await client.maintenance.status();
    const revision = Number(status.header.revision);
    await client.kv.compact({ revision: String(revision), physical: true });
    return revision;
  } finally {
    client.close();
  }
}
