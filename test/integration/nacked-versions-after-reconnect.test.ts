import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { TcpRelay } from '../faults/relay.js';
import { loomctl } from '../helpers/cli.js';
import { writeUsersConfig } from '../helpers/config-file.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { fleetStatus, rejectedSnapshots } from '../helpers/fleet-status.js';

/**
 * docs/loomctl.md: "A proxy never falls back to a version it nacked itself", and a nacked
 * version "is not sent to that proxy again until a newer version exists". Both must hold when
 * the proxy's stream to the same control plane breaks and the proxy reconnects.
 */

/** Returns the proxy's count of snapshots it rejected, from its metrics. */

describe('nacked versions after a reconnect', { timeout: 120_000 }, () => {
  let upstream: Server;
  let fleet: Fleet;
  let relay: TcpRelay;
  const proxies: FleetProxy[] = [];

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    fleet = await startFleet({ proxies: 0 });
    relay = await TcpRelay.start(Number(fleet.controlPlane.split(':')[1]));
  });
  after(async () => {
    for (const proxy of proxies) await proxy.process.stop();
    await relay?.close();
    await fleet?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  test('reconnect resends no nacked version', async () => {
    const port = (upstream.address() as AddressInfo).port;
    // proxy-good rejects version 3 only; proxy-faulty, behind the relay, rejects 2 and 3.
    const good = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-good', {
      rejectRoute: 'bad',
    });
    proxies.push(good);
    const faulty = await startProxy(relay.address, fleet.dir, 'proxy-faulty', {
      rejectRoute: 'poison',
    });
    proxies.push(faulty);
    await waitForPort('127.0.0.1', good.adminPort);
    await waitForPort('127.0.0.1', faulty.adminPort);

    const apply = async (name: string, routes: Record<string, string>) => {
      const file = writeUsersConfig(fleet.dir, name, port, routes);
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
      assert.equal(result.code, 0, result.stdout + result.stderr);
    };
    await apply('v1.yaml', { a: '/a' });
    await waitFor('both proxies to ack version 1', 15_000, async () => {
      return (await fleetStatus(fleet.controlPlane)).proxies.every((p) => p.ackedVersion === 1);
    });
    await apply('v2.yaml', { a: '/a', poison: '/p' });
    await waitFor('proxy-faulty to nack version 2', 15_000, async () => {
      return (await rejectedSnapshots(faulty)) === 1;
    });
    await apply('v3.yaml', { a: '/a', poison: '/p', bad: '/b' });
    await waitFor('proxy-faulty to nack version 3', 15_000, async () => {
      return (await rejectedSnapshots(faulty)) === 2;
    });
    const goodRecord = (await fleetStatus(fleet.controlPlane)).proxies.find(
      (p) => p.id === 'proxy-good',
    );
    assert.equal(goodRecord?.ackedVersion, 2, 'version proxy-good serves');

    for (let cut = 1; cut <= 2; cut++) {
      const accepted = relay.accepted;
      relay.cut();
      await new Promise((resolve) => setTimeout(resolve, 300));
      relay.heal();
      await waitFor(`proxy-faulty to reconnect after cut ${cut}`, 15_000, async () => {
        const record = (await fleetStatus(fleet.controlPlane)).proxies.find(
          (p) => p.id === 'proxy-faulty',
        );
        return relay.accepted > accepted && relay.open > 0 && record?.connected === true;
      });
      // Time for any snapshot the control plane sends after the hello to be built and nacked.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
    }

    assert.equal(await rejectedSnapshots(faulty), 2, 'snapshots proxy-faulty rejected');
    assert.equal((await httpGet(faulty.url('/a'))).status, 200, 'GET /a on proxy-faulty');
  });
});
