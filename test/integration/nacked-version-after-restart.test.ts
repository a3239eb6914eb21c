import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { fleetStatus, rejectedSnapshots } from '../helpers/fleet-status.js';
import { applyPoisonedVersion } from '../helpers/poisoned-apply.js';

/**
 * docs/loomctl.md: "A nacked version is not sent to that proxy again until a newer version
 * exists". A restarted control plane must keep to that for a proxy that still serves the
 * version before the one it nacked.
 */

/** Returns the proxy's count of snapshots it rejected, from its metrics. */

describe('nacked version after a control-plane restart', { timeout: 90_000 }, () => {
  let upstream: Server;
  let fleet: Fleet;
  let proxy: FleetProxy | undefined;

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    fleet = await startFleet({ proxies: 0 });
  });
  after(async () => {
    await proxy?.process.stop();
    await fleet?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  test('restart does not resend nacked version', async () => {
    const port = (upstream.address() as AddressInfo).port;
    proxy = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-1', { rejectRoute: 'poison' });
    const started = proxy;
    await waitForPort('127.0.0.1', started.adminPort);

    await applyPoisonedVersion(fleet, started, port);

    await fleet.stopControlPlane();
    await fleet.startControlPlane();
    await waitFor('proxy-1 to reconnect', 20_000, async () => {
      const record = (await fleetStatus(fleet.controlPlane)).proxies.find(
        (p) => p.id === 'proxy-1',
      );
      return record?.connected === true;
    });
    // The control plane writes a snapshot right after the hello; give the proxy time to build it.
    await new Promise((resolve) => setTimeout(resolve, 3_000));

    assert.equal(await rejectedSnapshots(started), 1, 'snapshots proxy-1 rejected');
    assert.equal((await httpGet(started.url('/a'))).status, 200, 'GET /a on proxy-1');
  });
});
