import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { Etcd3 } from 'etcd3';

import { waitFor } from '../../scripts/processes.js';
import { startEtcdFleet, type EtcdBackedFleet } from '../helpers/etcd-fleet.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import type { Fleet } from '../helpers/fleet.js';

interface StatusJson {
  proxies: { id: string; connected: boolean; controlPlane: string }[];
}

async function status(fleet: Fleet): Promise<StatusJson> {
  return fleetStatus(fleet.controlPlane);
}

describe('fleet record written without a lease', { timeout: 90_000 }, () => {
  let setup: EtcdBackedFleet;
  let client: Etcd3;
  let fleet: Fleet;

  before(async () => {
    setup = await startEtcdFleet({ proxies: 1 });
    ({ client, fleet } = setup);
    await waitFor('the proxy record', 15_000, async () => {
      const keys = await client.getAll().prefix('/loom/__meta/fleet/').keys();
      return keys.some((key) => key.endsWith('/proxy-1'));
    });
  });

  after(async () => {
    await setup?.stop();
  });

  test('reconnecting proxy is not rejected', async () => {
    // A copy of the proxy's record under a replica that does not exist, written without a
    // lease as etcdctl would write it. It claims a connected stream of another process.
    const records = await client.getAll().prefix('/loom/__meta/fleet/').strings();
    const [, value] = Object.entries(records).find(([key]) => key.endsWith('/proxy-1'))!;
    const ghost = JSON.parse(value) as {
      controlPlane: string;
      state: { instanceId: string };
    };
    ghost.controlPlane = 'ghost:7400';
    ghost.state.instanceId = 'ghost-instance';
    const ghostKey = '/loom/__meta/fleet/ghost-replica/proxy-1';
    await client.put(ghostKey).value(JSON.stringify(ghost));

    // The restarted control plane is a new replica, so the proxy's new stream is checked
    // against the records of every other replica, the ghost's included.
    await fleet.stopControlPlane();
    await fleet.startControlPlane();
    const reconnected = waitFor('proxy-1 to reconnect', 30_000, async () => {
      const listed = (await status(fleet)).proxies.filter((proxy) => proxy.id === 'proxy-1');
      return listed.length === 1 && listed[0]!.connected;
    });
    await assert.doesNotReject(reconnected, fleet.logs());

    const listed = (await status(fleet)).proxies.filter((proxy) => proxy.id === 'proxy-1');
    assert.notEqual(listed[0]?.controlPlane, 'ghost:7400');
    const proxyLog = readFileSync(join(fleet.dir, 'proxy-1.log'), 'utf8');
    assert.doesNotMatch(proxyLog, /ALREADY_EXISTS/);
    const controlPlaneLog = readFileSync(join(fleet.dir, 'control-plane.log'), 'utf8');
    assert.match(controlPlaneLog, /fleet record without a lease ignored/);
    assert.ok(controlPlaneLog.includes(`etcdctl del ${ghostKey}`));
  });
});
