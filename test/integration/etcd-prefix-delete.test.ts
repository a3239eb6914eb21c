import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Etcd3 } from 'etcd3';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { startLoom, waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { writeUsersConfig } from '../helpers/config-file.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, startProxy, type Fleet } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';
import { fleetStatus } from '../helpers/fleet-status.js';

const CONVERGE_MS = 15_000;

/** Runs etcdctl (API v3) against `endpoint`, as an operator would, bypassing loomctl. */
function etcdctl(endpoint: string, args: string[]): Promise<void> {
  return runEtcdctl([`--endpoints=${endpoint}`, ...args]);
}

async function getEpoch(controlPlane: string): Promise<string> {
  const result = await loomctl(controlPlane, ['get', '-o', 'json']);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { epoch: string }).epoch;
}

describe('etcd prefix deleted under a running control plane', { timeout: 90_000 }, () => {
  let etcd: EtcdProcess;
  let client: Etcd3;
  let fleet: Fleet;
  let upstream: Server;
  let upstreamPort = 0;
  const extra: LoomProcess[] = [];

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    upstreamPort = (upstream.address() as AddressInfo).port;
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoint });
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 1 });
  });
  after(async () => {
    for (const process of extra) await process.stop();
    await fleet?.stop();
    client?.close();
    await etcd?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  /** Applies one route per entry of `routes` with `--wait` and asserts exit code 0. */
  async function applyAndWait(name: string, routes: Record<string, string>): Promise<string> {
    const file = writeUsersConfig(fleet.dir, name, upstreamPort, routes);
    const result = await loomctl(fleet.controlPlane, [
      'apply',
      '-f',
      file,
      '--prune',
      '--wait',
      '--timeout',
      '15s',
    ]);
    assert.equal(result.code, 0, `${result.stdout}${result.stderr}\n${fleet.logs()}`);
    return file;
  }

  function servedStatus(path: string): Promise<number> {
    return httpGet(fleet.proxies[0].url(path)).then((response) => response.status);
  }

  /** Reads the accepted-version record that etcd keeps for every replica's fallbacks. */
  async function acceptedRecord(): Promise<{ epoch: string; version: number } | undefined> {
    const stored = await client.get('/loom/__meta/accepted').string();
    return stored === null ? undefined : (JSON.parse(stored) as { epoch: string; version: number });
  }

  test('route delete keeps the epoch', async () => {
    await applyAndWait('before-route-delete.yaml', { a: '/a', b: '/b' });
    const before = await fleetStatus(fleet.controlPlane);

    await etcdctl(etcd.endpoint, ['del', '--prefix', '/loom/routes/']);
    await waitFor('proxy-1 to stop serving /a', CONVERGE_MS, async () => {
      return (await servedStatus('/a')) === 404;
    });

    const after = await fleetStatus(fleet.controlPlane);
    assert.equal(after.epoch, before.epoch);
    assert.ok(after.version > before.version, `version ${after.version} after ${before.version}`);
    await applyAndWait('after-route-delete.yaml', { a: '/a', b: '/b' });
    assert.equal((await fleetStatus(fleet.controlPlane)).epoch, before.epoch);
  });

  test('prefix delete starts one new epoch', async () => {
    const before = await fleetStatus(fleet.controlPlane);
    await waitFor('etcd to record the accepted version', CONVERGE_MS, async () => {
      return (await acceptedRecord())?.epoch === before.epoch;
    });

    // The delete also removes the generation key and the accepted record under /loom/__meta/.
    await etcdctl(etcd.endpoint, ['del', '--prefix', '/loom/']);
    const file = await applyAndWait('after-prefix-delete.yaml', { a: '/a', c: '/c' });
    assert.equal(await servedStatus('/c'), 200);
    assert.equal(await servedStatus('/b'), 404);

    const after = await fleetStatus(fleet.controlPlane);
    assert.notEqual(after.epoch, before.epoch);
    assert.equal(await getEpoch(fleet.controlPlane), after.epoch);
    assert.equal(after.proxies[0]?.ackedEpoch, after.epoch);
    assert.equal(after.proxies[0]?.ackedVersion, after.version);
    const diff = await loomctl(fleet.controlPlane, ['diff', '-f', file, '--prune']);
    assert.equal(diff.code, 0, diff.stdout + diff.stderr);
    assert.match(diff.stdout, /no changes/);

    await waitFor('etcd to record the accepted version again', CONVERGE_MS, async () => {
      const record = await acceptedRecord();
      return record?.epoch === after.epoch && record.version === after.version;
    }).catch((error: Error) => assert.fail(`${error.message}\n${fleet.logs()}`));

    // A later apply in the new epoch waits successfully too.
    await applyAndWait('second-after-prefix-delete.yaml', { a: '/a', c: '/c', d: '/d' });
    assert.equal((await fleetStatus(fleet.controlPlane)).epoch, after.epoch);
  });

  test('empty generation starts one new epoch', async () => {
    const before = await fleetStatus(fleet.controlPlane);

    await etcdctl(etcd.endpoint, ['put', '/loom/__meta/generation', '']);
    await waitFor('proxy-1 to ack a new epoch', CONVERGE_MS, async () => {
      const current = await fleetStatus(fleet.controlPlane);
      return current.epoch !== before.epoch && current.proxies[0]?.ackedEpoch === current.epoch;
    }).catch((error: Error) => assert.fail(`${error.message}\n${fleet.logs()}`));

    const after = await fleetStatus(fleet.controlPlane);
    const generation = await client.get('/loom/__meta/generation').string();
    assert.match(generation ?? '', /^[0-9a-f-]{36}$/);
    assert.ok(after.epoch.endsWith(`-${generation}`), `${after.epoch} for ${generation}`);
    assert.equal(await getEpoch(fleet.controlPlane), after.epoch);
    assert.equal(await servedStatus('/c'), 200);
    await applyAndWait('after-empty-generation.yaml', { a: '/a', c: '/c', e: '/e' });
    assert.equal(await servedStatus('/e'), 200);
    assert.equal((await fleetStatus(fleet.controlPlane)).epoch, after.epoch);
  });

  test('second replica agrees and sends the fallback', async () => {
    const first = await fleetStatus(fleet.controlPlane);
    await waitFor('etcd to record the newest accepted version', CONVERGE_MS, async () => {
      const record = await acceptedRecord();
      return record?.epoch === first.epoch && record.version === first.version;
    });

    const [grpcPort, adminPort] = [await findFreePort(), await findFreePort()];
    const replica = `127.0.0.1:${grpcPort}`;
    const args = ['control-plane', '--listen', replica, '--admin-listen'];
    args.push(`127.0.0.1:${adminPort}`, '--etcd', etcd.endpoint, '--log-level', 'debug');
    extra.push(startLoom('control-plane-2', args, join(fleet.dir, 'control-plane-2.log')));
    await waitForPort('127.0.0.1', grpcPort);
    const second = await fleetStatus(replica);
    assert.equal(second.epoch, first.epoch);
    assert.equal(second.version, first.version);
    assert.equal(await getEpoch(replica), first.epoch);

    // A route that every proxy rejects: a proxy that starts now nacks it and has no table,
    // so the replica sends it the version that proxy-1 acked in the new epoch.
    const bad = { name: 'bad', paths: ['broken/:id'], upstream: 'users' };
    await etcdctl(etcd.endpoint, ['put', '/loom/routes/bad', JSON.stringify(bad)]);
    await waitFor('proxy-1 to nack the bad version', CONVERGE_MS, async () => {
      const current = await fleetStatus(fleet.controlPlane);
      return (
        current.version > first.version && current.proxies[0]?.nackedVersion === current.version
      );
    });

    const late = await startProxy(replica, fleet.dir, 'proxy-late');
    extra.push(late.process);
    await waitForPort('127.0.0.1', late.adminPort);
    await waitFor('proxy-late to serve the fallback', CONVERGE_MS, async () => {
      return (await httpGet(`http://127.0.0.1:${late.adminPort}/readyz`)).status === 200;
    }).catch((error: Error) => assert.fail(`${error.message}\n${fleet.logs()}`));
    const record = (await fleetStatus(replica)).proxies.find((proxy) => proxy.id === 'proxy-late');
    assert.equal(record?.fallbackVersion, first.version);
    assert.equal(record?.fallbackEpoch, first.epoch);
  });
});
