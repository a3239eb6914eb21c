import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import type { StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { writeUsersConfig } from '../helpers/config-file.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, startProxy, type Fleet } from '../helpers/fleet.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import { httpGet } from '../helpers/net.js';
import { sampleValue, scrape } from '../operations/exposition.js';

/** Control-plane counter of every nack, which alerts use. */
const NACKS = 'loom_control_plane_snapshot_nacks_total';

/** Runs etcdctl (API v3) against `endpoint`, as an operator would, bypassing loomctl. */
function etcdctl(endpoint: string, args: string[]): Promise<void> {
  return runEtcdctl([`--endpoints=${endpoint}`, ...args]);
}

async function status(fleet: Fleet): Promise<StatusResponse> {
  return fleetStatus(fleet.controlPlane);
}

async function upstreamOf(url: string): Promise<string | undefined> {
  const response = await httpGet(url);
  if (response.status !== 200) return undefined;
  return (JSON.parse(response.body) as { upstream: string }).upstream;
}

describe('fallback after a nack', { timeout: 120_000 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;
  let upstream: Server;
  let late: LoomProcess | undefined;

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    etcd = await startEtcd();
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 1 });
  });
  after(async () => {
    await late?.stop();
    await fleet?.stop();
    await etcd?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  test('new proxy serves last accepted', async () => {
    const port = (upstream.address() as AddressInfo).port;
    const file = writeUsersConfig(fleet.dir, 'good.yaml', port, { 'get-user': '/users/:id' });
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + fleet.logs());
    const accepted = (await status(fleet)).version;
    const metricsUrl = `http://127.0.0.1:${fleet.controlPlaneAdminPort}/metrics`;
    assert.equal(sampleValue(await scrape(metricsUrl), NACKS, {}), 0, 'nacks before any nack');

    // A pattern without a leading "/" passes no validation; every proxy rejects it.
    const bad = { name: 'bad', paths: ['broken/:id'], upstream: 'users' };
    await etcdctl(etcd.endpoint, ['put', '/loom/routes/bad', JSON.stringify(bad)]);
    await waitFor('proxy-1 to nack the bad version', 15_000, async () => {
      const current = await status(fleet);
      return current.version > accepted && current.proxies[0]?.nackedVersion === current.version;
    });
    const nacked = (await status(fleet)).version;
    const families = await scrape(metricsUrl);
    assert.equal(families.get(NACKS)?.type, 'counter');
    assert.equal(sampleValue(families, NACKS, {}), 1, 'nacks after one nack');
    const versioned = { version: String(nacked) };
    assert.equal(sampleValue(families, 'loom_control_plane_nacks_total', versioned), 1);

    const lateProxy = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-late');
    late = lateProxy.process;
    const [lateTraffic, lateAdmin] = [lateProxy.port, lateProxy.adminPort];
    await waitForPort('127.0.0.1', lateAdmin);
    await waitFor('proxy-late to become ready', 15_000, async () => {
      return (await httpGet(`http://127.0.0.1:${lateAdmin}/readyz`)).status === 200;
    });
    assert.equal(await upstreamOf(`http://127.0.0.1:${lateTraffic}/users/7`), 'users');

    const record = (await status(fleet)).proxies.find((proxy) => proxy.id === 'proxy-late');
    assert.equal(record?.ackedVersion, accepted);
    assert.equal(record?.nackedVersion, nacked);
    assert.equal(record?.fallbackVersion, accepted);
    const table = await loomctl(fleet.controlPlane, ['status']);
    assert.match(table.stdout, new RegExp(`sent last accepted version ${accepted}\\)`));

    await etcdctl(etcd.endpoint, ['del', '/loom/routes/bad']);
    await waitFor('the fleet to converge on the repaired version', 15_000, async () => {
      const current = await status(fleet);
      return (
        current.version > nacked &&
        current.proxies.length === 2 &&
        current.proxies.every((proxy) => proxy.ackedVersion === current.version)
      );
    });
    const repaired = await status(fleet);
    for (const proxy of repaired.proxies) assert.equal(proxy.fallbackVersion, 0, proxy.id);
    assert.equal(await upstreamOf(`http://127.0.0.1:${lateTraffic}/users/8`), 'users');
  });

  test('nacked fallback sends nothing more', async () => {
    const port = (upstream.address() as AddressInfo).port;
    const file = writeUsersConfig(fleet.dir, 'poisoned.yaml', port, {
      'get-user': '/users/:id',
      poison: '/poison',
    });
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    const accepted = (await status(fleet)).version;
    const bad = { name: 'bad', paths: ['broken/:id'], upstream: 'users' };
    await etcdctl(etcd.endpoint, ['put', '/loom/routes/bad', JSON.stringify(bad)]);
    await waitFor('the fleet to nack the bad version', 15_000, async () => {
      const current = await status(fleet);
      return (
        current.version > accepted &&
        current.proxies.every((proxy) => proxy.nackedVersion === current.version)
      );
    });

    // This proxy also rejects the accepted version, because it contains the route "poison".
    const faulty = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-faulty', {
      rejectRoute: 'poison',
    });
    const adminPort = faulty.adminPort;
    try {
      const record = async () =>
        (await status(fleet)).proxies.find((proxy) => proxy.id === 'proxy-faulty');
      await waitFor('proxy-faulty to nack the fallback', 15_000, async () => {
        return (await record())?.nackedVersion === accepted;
      });
      // Over a window without a new version, neither version is sent again.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const after = await record();
      assert.equal(after?.snapshotsSent, 2);
      assert.equal(after?.ackedVersion, 0);
      assert.equal((await httpGet(`http://127.0.0.1:${adminPort}/readyz`)).status, 503);
    } finally {
      await faulty.process.stop();
    }
  });
});
