import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { proxyStatus, rejectedSnapshots } from '../helpers/fleet-status.js';
import { applyPoisonedVersion } from '../helpers/poisoned-apply.js';

/**
 * A nack belongs to the proxy process that sent it. A new process under the same id, started on
 * the snapshot cache the old one wrote, serves the version before the nacked one and must still
 * be sent the nacked version, because its build or host may be fixed.
 */
describe('nacked version and a new proxy process', { timeout: 90_000 }, () => {
  let upstream: Server;
  let fleet: Fleet;
  const proxies: FleetProxy[] = [];

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    fleet = await startFleet({ proxies: 0 });
  });
  after(async () => {
    for (const proxy of proxies) await proxy.process.stop();
    await fleet?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  test('restart on snapshot cache gets nacked version', async () => {
    const port = (upstream.address() as AddressInfo).port;
    const cache = join(fleet.dir, 'proxy-1.snapshot');
    const cacheArgs = ['--snapshot-cache', cache];
    const first = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-1', {
      rejectRoute: 'poison',
      extraArgs: cacheArgs,
    });
    proxies.push(first);
    await waitForPort('127.0.0.1', first.adminPort);

    await applyPoisonedVersion(fleet, first, port);
    const nacked = await proxyStatus(fleet.controlPlane, 'proxy-1');
    assert.ok(nacked !== undefined, 'status lists proxy-1');
    assert.ok(nacked.nackedVersion > nacked.ackedVersion, 'proxy-1 nacked a newer version');

    // A graceful stop writes the cached snapshot: the version before the nacked one.
    assert.equal(await first.process.stop(), 0, 'exit code of the first process');
    assert.ok(existsSync(cache), `snapshot cache ${cache} written`);

    const restarted = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-1', {
      extraArgs: cacheArgs,
    });
    proxies.push(restarted);
    await waitFor('the new process to serve the nacked version', 20_000, async () => {
      const record = await proxyStatus(fleet.controlPlane, 'proxy-1');
      return record?.connected === true && record.ackedVersion === nacked.nackedVersion;
    });
    assert.equal(await rejectedSnapshots(restarted), 0, 'snapshots the new process rejected');
    assert.equal((await httpGet(restarted.url('/p'))).status, 200, 'GET /p on the new process');
  });
});
