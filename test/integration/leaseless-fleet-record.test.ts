import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { Etcd3 } from 'etcd3';

import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcdFleet, type EtcdBackedFleet } from '../helpers/etcd-fleet.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import type { Fleet } from '../helpers/fleet.js';

interface StatusJson {
  proxies: { id: string; connected: boolean; controlPlane: string; address: string }[];
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

  /**
   * Writes a copy of proxy-1's record for `id` under replica `replica`, with a lease as a
   * control plane writes it. Waits until status lists it, passes the listed entries to `check`
   * and revokes the lease.
   */
  async function withRecord(
    replica: string,
    id: string,
    fields: { controlPlane: string; address: string },
    check: (listed: StatusJson['proxies']) => Promise<void>,
  ): Promise<void> {
    const records = await client.getAll().prefix('/loom/__meta/fleet/').strings();
    const [, value] = Object.entries(records).find(([key]) => key.endsWith('/proxy-1'))!;
    const record = JSON.parse(value) as {
      controlPlane: string;
      state: { id: string; address: string; instanceId: string };
    };
    record.controlPlane = fields.controlPlane;
    record.state.id = id;
    record.state.address = fields.address;
    record.state.instanceId = `${id}-instance`;
    const lease = client.lease(60, { autoKeepAlive: false });
    try {
      await lease.put(`/loom/__meta/fleet/${replica}/${id}`).value(JSON.stringify(record));
      let listed: StatusJson['proxies'] = [];
      await waitFor('the record written by hand', 10_000, async () => {
        listed = (await status(fleet)).proxies.filter((proxy) => proxy.id === id);
        return listed.length > 0;
      });
      await check(listed);
    } finally {
      await lease.revoke();
    }
  }

  /** Runs `loomctl status` and returns its table output. */
  async function statusTable(): Promise<string> {
    const table = await loomctl(fleet.controlPlane, ['status']);
    assert.equal(table.code, 0, table.stderr);
    return table.stdout;
  }

  /** Returns the control plane's invalid-address warnings about proxy `id`. */
  function invalidAddressWarnings(id: string): string[] {
    const log = readFileSync(join(fleet.dir, 'control-plane.log'), 'utf8');
    return log
      .split('\n')
      .filter((line) => line.includes('shared proxy record has an invalid address'))
      .filter((line) => line.includes(`"proxyId":"${id}"`));
  }

  test('invalid stored address is marked', async () => {
    // A record as a control plane that predates the address check could write it: under a
    // lease, for a proxy that reported an address that is not host:port.
    const fields = { controlPlane: 'old:7400', address: 'old-proxy.internal\u001b[2J' };
    await withRecord('old-replica', 'old-proxy', fields, async (listed) => {
      assert.equal(listed.length, 1, JSON.stringify(listed));
      assert.equal(listed[0].address, '(invalid address)');
      const table = await statusTable();
      const row = table.split('\n').find((line) => line.startsWith('old-proxy '));
      assert.match(row ?? '', /^old-proxy +\(invalid address\) +old:7400 /);
      assert.doesNotMatch(table, /old-proxy\.internal/);

      const warnings = invalidAddressWarnings('old-proxy');
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0], /"replica":"old-replica","proxyId":"old-proxy","field":"address"/);
      assert.match(warnings[0], /"problem":"contains a control character"/);
    });
  });

  test('invalid stored control plane is marked', async () => {
    // A record of another writer of the store, whose control-plane field is not host:port.
    const fields = { controlPlane: 'foreign\u001b[2J:7400', address: '10.0.0.9:8080' };
    await withRecord('foreign-replica', 'foreign-proxy', fields, async (listed) => {
      assert.equal(listed.length, 1, JSON.stringify(listed));
      assert.equal(listed[0].controlPlane, '(invalid address)');
      assert.equal(listed[0].address, '10.0.0.9:8080');
      const table = await statusTable();
      const row = table.split('\n').find((line) => line.startsWith('foreign-proxy '));
      assert.match(row ?? '', /^foreign-proxy +10\.0\.0\.9:8080 +\(invalid address\) /);
      assert.doesNotMatch(table, /foreign\\u001b|foreign.\[2J/);

      const warnings = invalidAddressWarnings('foreign-proxy');
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0], /"replica":"foreign-replica"/);
      assert.match(warnings[0], /"field":"controlPlane"/);
      assert.match(warnings[0], /"problem":"contains a control character"/);
    });
  });
});
