import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { writeUsersConfig } from '../helpers/config-file.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { proxyStatus } from '../helpers/fleet-status.js';

/**
 * A proxy that nacks a version and has no table is sent the newest version that some proxy
 * acked (docs/loomctl.md, "Fallback to the last accepted version"). These tests check that an
 * ack that arrives late, or never arrives on a stream, still moves that version forward.
 */

describe('fallback version after late acks', { timeout: 120_000 }, () => {
  let upstream: Server;
  let fleet: Fleet;
  let first: FleetProxy | undefined;
  let late: FleetProxy | undefined;
  let port: number;

  beforeEach(async () => {
    upstream = await startEchoUpstream(0, 'users');
    port = (upstream.address() as AddressInfo).port;
    fleet = await startFleet({ proxies: 0 });
    // Every proxy of these tests rejects a snapshot that has the route "poison".
    first = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-1', { rejectRoute: 'poison' });
    await waitForPort('127.0.0.1', first.adminPort);
    const v1 = writeUsersConfig(fleet.dir, 'v1.yaml', port, { a: '/a' });
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', v1, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + fleet.logs());
  });

  afterEach(async () => {
    await late?.process.stop();
    await first?.process.stop();
    await fleet?.stop();
    await new Promise((resolve) => upstream.close(resolve));
    late = undefined;
  });

  /** Starts a proxy that nacks `nacked` and checks that it falls back to version 2 and serves /b. */
  async function expectFallbackToVersion2(nacked: number): Promise<void> {
    const proxy = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-late', {
      rejectRoute: 'poison',
    });
    late = proxy;
    await waitForPort('127.0.0.1', proxy.adminPort);
    await waitFor(`proxy-late to nack version ${nacked} and get a fallback`, 15_000, async () => {
      const record = await proxyStatus(fleet.controlPlane, 'proxy-late');
      return record?.nackedVersion === nacked && record.fallbackVersion > 0;
    });

    const record = await proxyStatus(fleet.controlPlane, 'proxy-late');
    assert.equal(record?.fallbackVersion, 2, 'fallback version');
    await waitFor('proxy-late to apply its fallback', 10_000, async () => {
      return (await proxyStatus(fleet.controlPlane, 'proxy-late'))?.ackedVersion === 2;
    });
    assert.equal((await httpGet(proxy.url('/b'))).status, 200, 'GET /b on proxy-late');
  }

  test('ack lost in a restart counts', async () => {
    if (first === undefined) assert.fail('proxy-1 did not start');
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

    await expectFallbackToVersion2(3);
  });

  test('late ack after burst counts', async () => {
    if (first === undefined) assert.fail('proxy-1 did not start');
    const proxy = first;
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

    await expectFallbackToVersion2(7);
  });
});
