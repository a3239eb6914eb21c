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
 * A proxy that applies a version while the control plane restarts loses its ack, because the
 * stream it would ack on is gone. It then reconnects and names that version in its hello. The
 * fallback for a proxy that nacks a newer version must still be the version the fleet serves.
 */

describe('fallback after a lost ack', { timeout: 120_000 }, () => {
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

  test('fallback is the version proxies serve', async () => {
    const port = (upstream.address() as AddressInfo).port;
    // Every proxy of this test rejects a snapshot that has the route "poison".
    first = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-1', { rejectRoute: 'poison' });
    await waitForPort('127.0.0.1', first.adminPort);

    const v1 = writeUsersConfig(fleet.dir, 'v1.yaml', port, { a: '/a' });
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', v1, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + fleet.logs());

    // The proxy is stopped while the control plane sends version 2, and the control plane is
    // restarted before the proxy reads it, so the proxy applies it with no stream to ack on.
    const pid = first.process.child.pid as number;
    process.kill(pid, 'SIGSTOP');
    let resumed = false;
    try {
      const v2 = writeUsersConfig(fleet.dir, 'v2.yaml', port, { a: '/a', b: '/b' });
      const second = await loomctl(fleet.controlPlane, ['apply', '-f', v2]);
      assert.equal(second.code, 0, second.stdout + second.stderr);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      await fleet.stopControlPlane();
      await fleet.startControlPlane();
      process.kill(pid, 'SIGCONT');
      resumed = true;
    } finally {
      if (!resumed) process.kill(pid, 'SIGCONT');
    }
    const proxy = first;
    await waitFor('proxy-1 to serve version 2', 20_000, async () => {
      return (await httpGet(proxy.url('/b'))).status === 200;
    });
    await waitFor(
      'proxy-1 to report version 2 to the restarted control plane',
      20_000,
      async () => {
        const record = await proxyStatus(fleet.controlPlane, 'proxy-1');
        return record?.connected === true && record.ackedVersion === 2;
      },
    );

    // Version 3 adds "poison", so proxy-1 and a new proxy both nack it.
    const v3 = writeUsersConfig(fleet.dir, 'v3.yaml', port, { a: '/a', b: '/b', poison: '/p' });
    const third = await loomctl(fleet.controlPlane, ['apply', '-f', v3]);
    assert.equal(third.code, 0, third.stdout + third.stderr);
    await waitFor('proxy-1 to nack version 3', 15_000, async () => {
      return (await proxyStatus(fleet.controlPlane, 'proxy-1'))?.nackedVersion === 3;
    });

    late = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-late', { rejectRoute: 'poison' });
    await waitForPort('127.0.0.1', late.adminPort);
    await waitFor('proxy-late to nack version 3 and get a fallback', 15_000, async () => {
      const record = await proxyStatus(fleet.controlPlane, 'proxy-late');
      return record?.nackedVersion === 3 && record.fallbackVersion > 0;
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
