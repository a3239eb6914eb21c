import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startLoom, waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';

/**
 * Enables authentication on `endpoint` with a user `loom` (password `pw`) that may write only
 * under `/loom/__meta/`. A control plane that logs in as `loom` opens the store and listens,
 * but its read of the whole `/loom/` prefix fails with PERMISSION_DENIED, so it never
 * publishes a snapshot.
 */
async function restrictLoomUser(endpoint: string): Promise<void> {
  const etcdctl = (...args: string[]) => runEtcdctl([`--endpoints=${endpoint}`, ...args]);
  await etcdctl('user', 'add', 'root:root-password');
  await etcdctl('role', 'add', 'meta-only');
  await etcdctl('role', 'grant-permission', 'meta-only', 'readwrite', '/loom/__meta/', '--prefix');
  await etcdctl('user', 'add', 'loom:pw');
  await etcdctl('user', 'grant-role', 'loom', 'meta-only');
  await etcdctl('auth', 'enable');
}

describe('control plane without a snapshot', { timeout: 120_000 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;
  let broken: LoomProcess;
  let brokenAddress: string;
  let brokenLog: string;
  let proxy: FleetProxy | undefined;

  before(async () => {
    etcd = await startEtcd();
    await restrictLoomUser(etcd.endpoint);
    fleet = await startFleet({ proxies: 0 });

    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    brokenAddress = `127.0.0.1:${port}`;
    brokenLog = join(fleet.dir, 'control-plane-no-snapshot.log');
    broken = startLoom(
      'control-plane-no-snapshot',
      [
        'control-plane',
        '--etcd',
        etcd.endpoint,
        '--etcd-user',
        'loom',
        '--listen',
        brokenAddress,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
      ],
      brokenLog,
      { LOOM_ETCD_PASSWORD: 'pw' },
    );
    await waitForPort('127.0.0.1', port);
    await waitFor('the store read to fail', 15_000, () => {
      return existsSync(brokenLog) && readFileSync(brokenLog, 'utf8').includes('store sync failed');
    });
  });

  after(async () => {
    await proxy?.process.stop();
    await broken?.stop();
    await fleet?.stop();
    await etcd?.stop();
  });

  test('proxy moves to next address', async () => {
    proxy = await startProxy(`${brokenAddress},${fleet.controlPlane}`, fleet.dir, 'proxy-moves');

    const ready = waitFor(
      'the proxy to become ready through the second address',
      30_000,
      async () => (await httpGet(`http://127.0.0.1:${proxy!.adminPort}/readyz`)).status === 200,
    );

    await assert.doesNotReject(ready, `${fleet.logs()}\n${readFileSync(brokenLog, 'utf8')}`);
    const log = readFileSync(join(fleet.dir, 'proxy-moves.log'), 'utf8');
    assert.match(log, /this control plane has no snapshot to send yet/);
  });
});
