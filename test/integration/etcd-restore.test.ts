import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import type { StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, waitForEveryProxy, type Fleet } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';

function configYaml(ports: Record<string, number>, usersUpstream: string, extra?: string): string {
  const extraRoute = extra
    ? `  - name: ${extra}\n    paths: [/${extra}]\n    upstream: alpha\n`
    : '';
  return `apiVersion: loom/v1
upstreams:
  - name: alpha
    targets: [{url: "http://127.0.0.1:${ports.alpha}"}]
  - name: beta
    targets: [{url: "http://127.0.0.1:${ports.beta}"}]
routes:
  - name: get-user
    paths: [/users/:id]
    upstream: ${usersUpstream}
${extraRoute}`;
}

async function upstreamOf(url: string): Promise<string | undefined> {
  const response = await httpGet(url);
  if (response.status !== 200) return `status ${response.status}`;
  return (JSON.parse(response.body) as { upstream: string }).upstream;
}

describe('etcd restored from a snapshot', { timeout: 120_000, concurrency: 1 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;
  const servers: Server[] = [];
  const ports: Record<string, number> = {};
  const apply = async (name: string, text: string) => {
    const path = join(fleet.dir, name);
    writeFileSync(path, text);
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', path, '--prune', '--wait']);
    assert.equal(result.code, 0, result.stdout + result.stderr + fleet.logs());
    assert.match(result.stdout, /applied by 2 of 2 proxies/);
    return result;
  };
  const status = async () => {
    const result = await loomctl(fleet.controlPlane, ['status', '-o', 'json']);
    return JSON.parse(result.stdout) as StatusResponse;
  };

  before(async () => {
    for (const name of ['alpha', 'beta']) {
      const server = await startEchoUpstream(0, name);
      servers.push(server);
      ports[name] = (server.address() as AddressInfo).port;
    }
    etcd = await startEtcd();
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 2 });
  });

  after(async () => {
    await fleet?.stop();
    await etcd?.stop();
    for (const server of servers) server.close();
  });

  test('proxies serve the restored state', async () => {
    await apply('a.yaml', configYaml(ports, 'alpha'));
    const backup = join(fleet.dir, 'backup.db');
    await etcd.saveSnapshot(backup);
    await apply('b.yaml', configYaml(ports, 'beta', 'later'));
    const beforeRestore = await status();
    for (const proxy of fleet.proxies) {
      assert.equal(await upstreamOf(proxy.url('/users/1')), 'beta');
    }

    // etcd's documented restore gives the cluster a new token, so a new cluster id.
    await etcd.restoreSnapshot(backup, { clusterToken: 'loom-restored' });
    await waitForEveryProxy(
      fleet,
      'serves the restored configuration',
      async (proxy) =>
        (await upstreamOf(proxy.url('/users/1'))) === 'alpha' &&
        (await upstreamOf(proxy.url('/later'))) === 'status 404',
      30_000,
    );
    const restored = await status();
    assert.notEqual(restored.epoch, beforeRestore.epoch);
    assert.ok(restored.version < beforeRestore.version, JSON.stringify(restored));
    for (const proxy of restored.proxies) {
      assert.equal(proxy.ackedEpoch, restored.epoch);
      assert.equal(proxy.ackedVersion, restored.version);
    }
  });

  test('restored store accepts new applies', async () => {
    await apply('c.yaml', configYaml(ports, 'beta', 'after-restore'));
    for (const proxy of fleet.proxies) {
      assert.equal(await upstreamOf(proxy.url('/users/1')), 'beta');
      assert.equal(await upstreamOf(proxy.url('/after-restore')), 'alpha');
    }
  });

  test('restore keeping the cluster id', async () => {
    // A second restore with the same token keeps the cluster id and the generation key,
    // so only the drop in revisions shows that the history went backwards.
    const before = await status();
    const backup = join(fleet.dir, 'backup-2.db');
    await etcd.saveSnapshot(backup);
    await apply('d.yaml', configYaml(ports, 'alpha', 'lost'));
    await etcd.restoreSnapshot(backup, { clusterToken: 'loom-restored' });
    await waitForEveryProxy(
      fleet,
      'serves the restored configuration',
      async (proxy) => (await upstreamOf(proxy.url('/lost'))) === 'status 404',
      30_000,
    );
    const restored = await status();
    assert.notEqual(restored.epoch, before.epoch);

    await apply('e.yaml', configYaml(ports, 'alpha', 'after-second-restore'));
    for (const proxy of fleet.proxies) {
      assert.equal(await upstreamOf(proxy.url('/after-second-restore')), 'alpha');
    }
  });
});
