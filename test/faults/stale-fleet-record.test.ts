// Fleet records of a control plane that stopped during an etcd outage: a restart of etcd
// renews every lease, so the stopped replica's records outlive it, and status must not show
// its proxy as connected through it. Real etcd, real control planes and proxies.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { AdminClient } from '../../cli/admin-client.js';
import type { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';
import { waitFor } from '../../scripts/processes.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import { startReplicas, type Replicas } from '../helpers/replicas.js';
import type { Member } from './harness.js';

/** Polls of the status after etcd is back, 250 ms apart: 20 s, twice the fleet lease. */
const POLLS_AFTER_OUTAGE = 80;

async function proxiesOn(controlPlane: Member): Promise<ProxyStatus[] | undefined> {
  const client = new AdminClient(controlPlane.address);
  try {
    return (await client.status({ version: 0 }, 5_000)).proxies;
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

/** True when `proxy` is listed as connected through `controlPlane`, matched by port. */
function connectedThrough(
  proxies: ProxyStatus[] | undefined,
  id: string,
  controlPlane: Member,
): boolean {
  return (proxies ?? []).some(
    (proxy) =>
      proxy.id === id && proxy.connected && proxy.controlPlane.endsWith(`:${controlPlane.port}`),
  );
}

describe('fleet record after etcd outage', { timeout: 180_000 }, () => {
  let replicas: Replicas;
  let third: Member;

  before(async () => {
    replicas = await startReplicas();
    third = await replicas.ws.controlPlane('cp-c', ['--etcd', replicas.etcd.endpoint]);
    await replicas.ws.proxy('proxy-a', [replicas.first.address]);
    await replicas.ws.proxy('proxy-c', [third.address]);
  });

  after(async () => {
    await replicas?.close();
  });

  test('stopped replica shows no stream', async () => {
    const { etcd, first, second, ws } = replicas;
    await waitFor('both proxies listed on cp-b', 30_000, async () => {
      const proxies = await proxiesOn(second);
      return (
        connectedThrough(proxies, 'proxy-a', first) && connectedThrough(proxies, 'proxy-c', third)
      );
    });

    // cp-a stops while etcd is down, so it cannot delete its records or revoke its lease.
    await etcd.kill();
    await first.process.stop();
    await etcd.restart();

    const stale: string[] = [];
    for (let poll = 0; poll < POLLS_AFTER_OUTAGE; poll++) {
      const proxies = await proxiesOn(second);
      if (connectedThrough(proxies, 'proxy-a', first)) stale.push(JSON.stringify(proxies));
      await sleep(250);
    }
    assert.deepEqual(stale, [], ws.logs());

    const log = readFileSync(second.logFile, 'utf8');
    assert.match(log, /fleet records of a replica not confirmed since the etcd leader election/);

    // The live replica confirms its records after the election, so its proxy is listed again.
    await waitFor('proxy-c listed through cp-c', 30_000, async () => {
      return connectedThrough(await proxiesOn(second), 'proxy-c', third);
    });
    const thirdLog = readFileSync(third.logFile, 'utf8');
    assert.match(thirdLog, /fleet replica key written/);

    const status = await fleetStatus(second.address);
    const listed = status.proxies.filter((proxy) => proxy.id === 'proxy-a');
    assert.ok(
      listed.every((proxy) => !proxy.connected),
      `proxy-a listed as connected: ${JSON.stringify(listed)}`,
    );
  });
});
