import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { AdminClient } from '../../cli/admin-client.js';
import { waitFor } from '../../scripts/processes.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { httpGet } from '../helpers/net.js';
import {
  applyConfig,
  countLogLines,
  loggedVersions,
  fixtureConfig,
  readyz,
  startLoad,
  startUpstream,
  waitForVersion,
  Workspace,
} from './harness.js';
import { TcpRelay } from './relay.js';

/** Polls a proxy's served version and records every change, to catch a step backwards. */
function sampleVersions(adminPort: number): { stop(): Promise<number[]> } {
  const seen: number[] = [];
  let running = true;
  // Bounded, and stopped by a failed read, so a failing test cannot leave it polling forever.
  const deadline = Date.now() + 120_000;
  const sample = async (): Promise<boolean> => {
    const state = await readyz(adminPort).catch(() => undefined);
    if (state === undefined) return false;
    const version = state.body.version;
    if (version !== undefined && version !== seen.at(-1)) seen.push(version);
    return true;
  };
  const loop = (async () => {
    while (running && Date.now() < deadline) {
      if (!(await sample())) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      // The loop may have slept through the newest version; one more read records it.
      await sample();
      return seen;
    },
  };
}

function assertNonDecreasing(versions: number[]): void {
  for (let i = 1; i < versions.length; i++) {
    assert.ok(versions[i] >= versions[i - 1], `version went back: ${versions.join(' -> ')}`);
  }
}

/** True when every proxy of `ids` streams from the control plane at `controlPlane` itself. */
async function proxiesConnected(controlPlane: string, ids: string[]): Promise<boolean> {
  const client = new AdminClient(controlPlane);
  try {
    const status = await client.status();
    // Other replicas' proxies are listed too, and a killed one's for a few seconds more.
    const own = (proxy: { connected: boolean; controlPlane: string }) =>
      proxy.connected && proxy.controlPlane === status.controlPlane;
    return ids.every((id) => status.proxies.some((proxy) => proxy.id === id && own(proxy)));
  } finally {
    client.close();
  }
}

describe('control plane faults', { timeout: 120_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let etcd: EtcdProcess;

  before(async () => {
    upstream = await startUpstream('echo');
    etcd = await startEtcd();
  });

  after(async () => {
    upstream.server.close();
    await etcd.stop();
  });

  test('restart under load fails nothing', async () => {
    const ws = new Workspace();
    try {
      const store = ['--data-dir', join(ws.dir, 'store')];
      let cp = await ws.controlPlane('cp', store);
      const proxies = [await ws.proxy('p1', [cp.address]), await ws.proxy('p2', [cp.address])];
      const first = await applyConfig(cp.address, fixtureConfig(upstream.port, 4));
      for (const proxy of proxies) await waitForVersion(proxy.adminPort, first);
      const loads = proxies.map((proxy) =>
        startLoad(`http://${proxy.address}/hold/x`, { concurrency: 4, maxRequests: 50_000 }),
      );

      await cp.process.kill();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const restartedAt = performance.now();
      cp = await ws.controlPlane('cp-restarted', store, cp.port);
      await waitFor('proxies to reconnect', 30_000, () =>
        proxiesConnected(cp.address, ['p1', 'p2']),
      );
      const reconnectMs = performance.now() - restartedAt;
      const second = await applyConfig(cp.address, fixtureConfig(upstream.port, 5));
      for (const proxy of proxies) await waitForVersion(proxy.adminPort, second);

      const results = await Promise.all(loads.map((load) => load.stop()));
      for (const result of results) {
        assert.equal(result.failed, 0, result.failures.join('\n'));
        assert.ok(result.ok > 0);
      }
      process.stdout.write(
        `# control-plane restart: proxies reconnected ${Math.round(reconnectMs)} ms after the ` +
          `restart; ${results.map((r) => r.ok).join('+')} requests, 0 failed\n`,
      );
    } finally {
      await ws.close();
    }
  });

  test('second replica takes over', async () => {
    const ws = new Workspace();
    try {
      const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
      const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
      const proxy = await ws.proxy('proxy-takeover', [first.address, second.address]);
      const sampler = sampleVersions(proxy.adminPort);
      const v1 = await applyConfig(first.address, fixtureConfig(upstream.port, 2));
      await waitForVersion(proxy.adminPort, v1);
      assert.equal(await proxiesConnected(first.address, ['proxy-takeover']), true);

      const killedAt = performance.now();
      await first.process.kill();
      await waitFor('proxy on the second replica', 20_000, () =>
        proxiesConnected(second.address, ['proxy-takeover']),
      );
      const failoverMs = performance.now() - killedAt;
      const v2 = await applyConfig(second.address, fixtureConfig(upstream.port, 3));
      await waitForVersion(proxy.adminPort, v2);
      assert.equal((await httpGet(`http://${proxy.address}/r2/x`)).status, 200);

      const versions = await sampler.stop();
      assertNonDecreasing(versions);
      assert.equal(versions.at(-1), v2);
      process.stdout.write(`# replica failover: proxy on cp-b ${Math.round(failoverMs)} ms\n`);
    } finally {
      await ws.close();
    }
  });

  test('lagging replica sends nothing older', async () => {
    const relay = await TcpRelay.start(etcd.clientPort);
    const ws = new Workspace();
    try {
      const main = await ws.controlPlane('cp-main', ['--etcd', etcd.endpoint]);
      const lagging = await ws.controlPlane('cp-lagging', ['--etcd', `http://${relay.address}`]);
      const v1 = await applyConfig(main.address, fixtureConfig(upstream.port, 1));
      await waitFor('lagging replica at v1', 10_000, async () => {
        const client = new AdminClient(lagging.address);
        const status = await client.status().finally(() => client.close());
        return status.version >= v1;
      });

      relay.cut();
      const proxy = await ws.proxy('proxy-lagging', [main.address, lagging.address]);
      const v3 = await applyConfig(main.address, fixtureConfig(upstream.port, 3));
      await waitForVersion(proxy.adminPort, v3);
      const sampler = sampleVersions(proxy.adminPort);
      // Later log lines are compared with the line of v3.
      await waitFor('v3 in the proxy log', 10_000, () =>
        loggedVersions(proxy.logFile, 'snapshot applied').includes(v3),
      );

      await main.process.kill();
      await waitFor('proxy on the lagging replica', 20_000, () =>
        proxiesConnected(lagging.address, ['proxy-lagging']),
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal((await readyz(proxy.adminPort)).body.version, v3);
      assert.equal((await httpGet(`http://${proxy.address}/r2/x`)).status, 200);
      // The lagging replica holds an older version, so the proxy applies nothing from it.
      const applied = loggedVersions(proxy.logFile, 'snapshot applied');
      assert.deepEqual(applied.slice(applied.indexOf(v3) + 1), [], ws.logs());

      relay.heal();
      const v4 = await applyConfig(lagging.address, fixtureConfig(upstream.port, 4));
      await waitForVersion(proxy.adminPort, v4);
      const versions = await sampler.stop();
      assertNonDecreasing(versions);
    } finally {
      await ws.close();
      await relay.close();
    }
  });

  test('proxy starts from its snapshot cache', async () => {
    const ws = new Workspace();
    try {
      const store = ['--data-dir', join(ws.dir, 'store')];
      const cache = ['--snapshot-cache', join(ws.dir, 'proxy-cache.json')];
      const cp = await ws.controlPlane('cp', store);
      const proxy = await ws.proxy('proxy', [cp.address], cache);
      const v1 = await applyConfig(cp.address, fixtureConfig(upstream.port, 2));
      await waitForVersion(proxy.adminPort, v1);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(await proxy.process.stop(), 0);
      await cp.process.stop();

      const restarted = await ws.proxy('proxy-restarted', [cp.address], cache);
      await waitForVersion(restarted.adminPort, v1, 10_000);
      const state = await readyz(restarted.adminPort);
      assert.equal(state.body.source, 'snapshot-cache');
      assert.equal((await httpGet(`http://${restarted.address}/r1/x`)).status, 200);
      await waitFor(
        'the cached snapshot log line',
        10_000,
        () => countLogLines(restarted.logFile, 'serving cached snapshot') > 0,
      );
      assert.equal(countLogLines(restarted.logFile, 'serving cached snapshot'), 1);

      const back = await ws.controlPlane('cp-back', store, cp.port);
      const v2 = await applyConfig(back.address, fixtureConfig(upstream.port, 3));
      await waitForVersion(restarted.adminPort, v2);
      assert.equal((await readyz(restarted.adminPort)).body.source, 'control-plane');
    } finally {
      await ws.close();
    }
  });
});
