import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';

describe('route stored in another spelling', { timeout: 120_000, concurrency: 1 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;
  let upstream: Server;

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    etcd = await startEtcd();
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 1 });
  });

  after(async () => {
    await fleet?.stop();
    await etcd?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  test('diff matches what proxies serve', async () => {
    const port = (upstream.address() as AddressInfo).port;
    const file = join(fleet.dir, 'legacy.yaml');
    writeFileSync(
      file,
      [
        'upstreams:',
        `  - {name: users, targets: [{url: "http://127.0.0.1:${port}"}]}`,
        'routes:',
        '  - {name: legacy, paths: [/legacy], methods: [GET], upstream: users}',
        '',
      ].join('\n'),
    );
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stderr);

    // An older release, or an operator with etcdctl, stored the method in lower case.
    const legacy = { name: 'legacy', hosts: [], paths: ['/legacy'], methods: ['get'] };
    await runEtcdctl([
      `--endpoints=${etcd.endpoint}`,
      'put',
      '/loom/routes/legacy',
      JSON.stringify({ ...legacy, upstream: 'users' }),
    ]);
    await waitFor('proxy-1 to apply the stored spelling', 15_000, async () => {
      const status = await fleetStatus(fleet.controlPlane);
      return status.proxies[0]?.ackedVersion === status.version && status.version > 0;
    });

    const diff = await loomctl(fleet.controlPlane, ['diff', '-f', file]);
    const served = await httpGet(fleet.proxies[0]!.url('/legacy'));
    // Either diff reports the change, or proxies serve the route as the file declares it.
    assert.ok(
      diff.code === 2 || served.status === 200,
      `diff exit ${diff.code} (${diff.stdout.trim()}), but GET /legacy returned ${served.status}`,
    );
  });

  test('stored stripPrefix strips as declared', async () => {
    const before = (await fleetStatus(fleet.controlPlane)).version;
    // A file's `stripPrefix: /rawr/` is stored as "/rawr", but this value keeps the slash.
    const rawr = { name: 'rawr', hosts: [], paths: ['/rawr/*rest'], methods: [] };
    await runEtcdctl([
      `--endpoints=${etcd.endpoint}`,
      'put',
      '/loom/routes/rawr',
      JSON.stringify({ ...rawr, upstream: 'users', stripPrefix: '/rawr/' }),
    ]);
    await waitFor('proxy-1 to apply route rawr', 15_000, async () => {
      const status = await fleetStatus(fleet.controlPlane);
      return status.version > before && status.proxies[0]?.ackedVersion === status.version;
    });

    const served = await httpGet(fleet.proxies[0]!.url('/rawr/x'));
    assert.equal(served.status, 200, served.body);
    assert.equal((JSON.parse(served.body) as { url: string }).url, '/x');
  });
});
