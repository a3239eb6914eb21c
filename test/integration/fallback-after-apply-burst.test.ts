import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { writeUsersConfig } from '../helpers/config-file.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { proxyStatus } from '../helpers/fleet-status.js';

/**
 * docs/loomctl.md: a proxy that nacks a version and holds no table "is sent that acked
 * version", the newest version that some proxy acked. Here a proxy acks version 2 only after
 * five more versions were published, as a proxy that builds a large table slowly would.
 */

describe('fallback after a burst of applies', { timeout: 120_000 }, () => {
  let upstream: Server;
  let fleet: Fleet;
  let first: FleetProxy | undefined;
  let late: FleetProxy | undefined;

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    fleet = await startFleet({ proxies: 0 });
  });
  after(async () => {
    await late?.process.stop();
    await first?.process.stop();
    await fleet?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  test('late ack still moves the fallback', async () => {
    const port = (upstream.address() as AddressInfo).port;
    // Every proxy of this test rejects a snapshot that has the route "poison".
    first = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-1', { rejectRoute: 'poison' });
    const proxy = first;
    await waitForPort('127.0.0.1', proxy.adminPort);

    const v1 = writeUsersConfig(fleet.dir, 'v1.yaml', port, { a: '/a' });
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', v1, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + fleet.logs());

    // While proxy-1 is stopped, version 2 (good) and versions 3 to 7 (with "poison") are
    // published. On resuming, proxy-1 applies and acks 2, then nacks 7.
    const pid = proxy.process.child.pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      const routes: Record<string, string> = { a: '/a', b: '/b' };
      const file = writeUsersConfig(fleet.dir, 'v2.yaml', port, routes);
      const second = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
      assert.equal(second.code, 0, second.stdout + second.stderr);
      routes.poison = '/p';
      for (let version = 3; version <= 7; version++) {
        routes[`c${version}`] = `/c${version}`;
        const next = writeUsersConfig(fleet.dir, `v${version}.yaml`, port, routes);
        const result = await loomctl(fleet.controlPlane, ['apply', '-f', next]);
        assert.equal(result.code, 0, result.stdout + result.stderr);
      }
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitFor('proxy-1 to ack 2 and nack 7', 15_000, async () => {
      const record = await proxyStatus(fleet.controlPlane, 'proxy-1');
      return record?.ackedVersion === 2 && record.nackedVersion === 7;
    });
    assert.equal((await httpGet(proxy.url('/b'))).status, 200, 'GET /b on proxy-1');

    late = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-late', { rejectRoute: 'poison' });
    await waitForPort('127.0.0.1', late.adminPort);
    await waitFor('proxy-late to nack version 7 and get a fallback', 15_000, async () => {
      const record = await proxyStatus(fleet.controlPlane, 'proxy-late');
      return record?.nackedVersion === 7 && record.fallbackVersion > 0;
    });
    const record = await proxyStatus(fleet.controlPlane, 'proxy-late');
    assert.equal(record?.fallbackVersion, 2, 'fallback version');
    const lateProxy = late;
    await waitFor('proxy-late to apply its fallback', 10_000, async () => {
      return (await proxyStatus(fleet.controlPlane, 'proxy-late'))?.ackedVersion === 2;
    });
    assert.equal((await httpGet(lateProxy.url('/b'))).status, 200, 'GET /b on proxy-late');
  });
});
