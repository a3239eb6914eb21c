import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
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
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';
import { fleetStatus } from '../helpers/fleet-status.js';

/** Runs etcdctl (API v3) against `endpoint`, as an operator would, bypassing loomctl. */
function etcdctl(endpoint: string, args: string[]): Promise<void> {
  return runEtcdctl([`--endpoints=${endpoint}`, ...args]);
}

/** Returns the proxy's record in the control plane's status, or undefined. */
async function proxyRecord(controlPlane: string, id: string) {
  return (await fleetStatus(controlPlane)).proxies.find((proxy) => proxy.id === id);
}

/** Waits until the proxy's /readyz returns 200, which it does once it serves a table. */
function waitForReady(proxy: FleetProxy, what: string): Promise<void> {
  return waitFor(
    what,
    10_000,
    async () => (await httpGet(`http://127.0.0.1:${proxy.adminPort}/readyz`)).status === 200,
  );
}

/** Returns the control plane's log lines with message `msg`, parsed. */
function logLines(file: string, msg: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.includes(`"msg":"${msg}"`))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Puts a route whose pattern has no leading "/"; every proxy rejects it. */
function putBadRoute(endpoint: string, name: string): Promise<void> {
  const bad = { name, paths: [`broken-${name}/:id`], upstream: 'users' };
  return etcdctl(endpoint, ['put', `/loom/routes/${name}`, JSON.stringify(bad)]);
}

describe('nack fallback edge cases', { timeout: 150_000, concurrency: 1 }, () => {
  let etcd: EtcdProcess;
  let client: Etcd3;
  let fleet: Fleet;
  let upstream: Server;
  const extra: LoomProcess[] = [];

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
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

  /** Waits until proxy-1 acks the current version and etcd records it; returns the version. */
  async function waitForRecordedAck(): Promise<number> {
    await waitFor('proxy-1 to ack the current version', 15_000, async () => {
      const current = await fleetStatus(fleet.controlPlane);
      const first = current.proxies.find((proxy) => proxy.id === 'proxy-1');
      return first?.ackedVersion === current.version;
    });
    const accepted = (await fleetStatus(fleet.controlPlane)).version;
    await waitFor('etcd to record the accepted version', 10_000, async () => {
      const stored = await client.get('/loom/__meta/accepted').string();
      return stored !== null && (JSON.parse(stored) as { version: number }).version === accepted;
    });
    return accepted;
  }

  /** Puts a bad route and waits until proxy-1 nacks its version; returns that version. */
  async function putNackedRoute(name: string, accepted: number): Promise<number> {
    await putBadRoute(etcd.endpoint, name);
    await waitFor(`proxy-1 to nack the version with ${name}`, 15_000, async () => {
      const current = await fleetStatus(fleet.controlPlane);
      return current.version > accepted && current.proxies[0]?.nackedVersion === current.version;
    });
    return (await fleetStatus(fleet.controlPlane)).version;
  }

  /** Stops the first control plane and starts it again on the same etcd. */
  async function restartControlPlane(): Promise<void> {
    await fleet.stopControlPlane();
    await fleet.startControlPlane();
    await waitFor('the restarted control plane to publish', 15_000, async () => {
      return (await fleetStatus(fleet.controlPlane)).version > 0;
    });
  }

  test('nacked fallback not resent later', async () => {
    const port = (upstream.address() as AddressInfo).port;
    const file = writeUsersConfig(fleet.dir, 'poisoned.yaml', port, {
      'get-user': '/users/:id',
      poison: '/poison',
    });
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    const accepted = (await fleetStatus(fleet.controlPlane)).version;
    await putBadRoute(etcd.endpoint, 'bad-one');
    await waitFor('the fleet to nack the first bad version', 15_000, async () => {
      const current = await fleetStatus(fleet.controlPlane);
      return current.version > accepted && current.proxies[0]?.nackedVersion === current.version;
    });

    // This proxy rejects the accepted version too, because it contains the route "poison".
    const faulty = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-faulty', {
      rejectRoute: 'poison',
    });
    extra.push(faulty.process);
    const record = async () =>
      (await fleetStatus(fleet.controlPlane)).proxies.find((proxy) => proxy.id === 'proxy-faulty');
    await waitFor('proxy-faulty to nack the fallback', 15_000, async () => {
      return (await record())?.nackedVersion === accepted;
    });
    assert.equal((await record())?.snapshotsSent, 2);

    try {
      // A second bad version: proxy-faulty gets it and nacks it, and must not get the
      // accepted version again, which it nacked on this same stream.
      await putBadRoute(etcd.endpoint, 'bad-two');
      await waitFor('proxy-1 to nack the second bad version', 15_000, async () => {
        const current = await fleetStatus(fleet.controlPlane);
        const first = current.proxies.find((proxy) => proxy.id === 'proxy-1');
        return first?.nackedVersion === current.version;
      });
      await waitFor('proxy-faulty to get the second bad version', 15_000, async () => {
        return ((await record())?.snapshotsSent ?? 0) >= 3;
      });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const latest = (await fleetStatus(fleet.controlPlane)).version;
      const after = await record();
      assert.equal(
        after?.snapshotsSent,
        3,
        `sent again; last nack ${after?.nackedVersion}\n${fleet.logs()}`,
      );
      assert.equal(after?.nackedVersion, latest);
    } finally {
      await faulty.process.stop();
      await etcdctl(etcd.endpoint, ['del', '/loom/routes/bad-one']);
      await etcdctl(etcd.endpoint, ['del', '/loom/routes/bad-two']);
    }
  });

  test('second replica sends fallback too', async () => {
    const accepted = await waitForRecordedAck();

    const [grpcPort, adminPort] = [await findFreePort(), await findFreePort()];
    const replica = `127.0.0.1:${grpcPort}`;
    const second = startLoom(
      'control-plane-2',
      [
        'control-plane',
        '--listen',
        replica,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
        '--etcd',
        etcd.endpoint,
        '--log-level',
        'debug',
      ],
      join(fleet.dir, 'control-plane-2.log'),
    );
    extra.push(second);
    await waitForPort('127.0.0.1', grpcPort);
    // Recording the accepted version moved etcd's revision past it, but a range read skips
    // that write, so the replica publishes the version the proxies acked.
    await waitFor('the replica to publish the accepted version', 15_000, async () => {
      return (await fleetStatus(replica)).version === accepted;
    });

    // proxy-1 streams from the first replica only, so only that replica receives its nack.
    await putNackedRoute('bad-three', accepted);

    const late = await startProxy(replica, fleet.dir, 'proxy-late');
    try {
      await waitForPort('127.0.0.1', late.adminPort);
      await waitFor('proxy-late to nack the bad version', 15_000, async () => {
        return ((await proxyRecord(replica, 'proxy-late'))?.nackedVersion ?? 0) > accepted;
      });
      await waitForReady(late, 'proxy-late to serve the last accepted version');
      assert.equal((await proxyRecord(replica, 'proxy-late'))?.fallbackVersion, accepted);
    } finally {
      await late.process.stop();
      await second.stop();
      await etcdctl(etcd.endpoint, ['del', '/loom/routes/bad-three']);
    }
  });

  test('restarted control plane rebuilds fallback', async () => {
    const accepted = await waitForRecordedAck();
    const nacked = await putNackedRoute('bad-four', accepted);

    await restartControlPlane();
    const fresh = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-after-restart');
    try {
      await waitForPort('127.0.0.1', fresh.adminPort);
      await waitForReady(fresh, 'proxy-after-restart to serve the rebuilt accepted version');
      const record = await proxyRecord(fleet.controlPlane, 'proxy-after-restart');
      assert.equal(record?.nackedVersion, nacked);
      assert.equal(record?.fallbackVersion, accepted);
      // The fallback is sent only when the rebuilt content hashes as the acked one did.
      const loaded = logLines(join(fleet.dir, 'control-plane.log'), 'accepted snapshot loaded');
      assert.ok(
        loaded.some((line) => line.version === accepted && line.source === 'store'),
        JSON.stringify(loaded),
      );
    } finally {
      await fresh.process.stop();
      await etcdctl(etcd.endpoint, ['del', '/loom/routes/bad-four']);
    }
  });

  test('compacted accepted revision sends no fallback', async () => {
    const accepted = await waitForRecordedAck();
    const nacked = await putNackedRoute('bad-five', accepted);
    // Every revision below the bad version's, the accepted one included, is compacted.
    await etcdctl(etcd.endpoint, ['compact', String(nacked)]);

    await restartControlPlane();
    const log = join(fleet.dir, 'control-plane.log');
    await waitFor('the control plane to log the compacted accepted version', 15_000, () => {
      return logLines(log, 'accepted snapshot not rebuilt').some(
        (line) => line.version === accepted && line.reason === 'compacted',
      );
    });
    const fresh = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-compacted');
    try {
      await waitForPort('127.0.0.1', fresh.adminPort);
      await waitFor('proxy-compacted to nack the bad version', 15_000, async () => {
        return (await proxyRecord(fleet.controlPlane, 'proxy-compacted'))?.nackedVersion === nacked;
      });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const record = await proxyRecord(fleet.controlPlane, 'proxy-compacted');
      assert.equal(record?.fallbackVersion, 0);
      assert.equal(record?.snapshotsSent, 1);
      const ready = await httpGet(`http://127.0.0.1:${fresh.adminPort}/readyz`);
      assert.notEqual(ready.status, 200);
      const lines = logLines(log, 'accepted snapshot not rebuilt');
      assert.equal(lines.filter((line) => line.version === accepted).length, 1);
    } finally {
      await fresh.process.stop();
      await etcdctl(etcd.endpoint, ['del', '/loom/routes/bad-five']);
    }
  });
});

describe('nack fallback on the embedded store', { timeout: 90_000 }, () => {
  let fleet: Fleet;
  let upstream: Server;

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    fleet = await startFleet({ proxies: 0 });
  });
  after(async () => {
    await fleet?.stop();
    await new Promise((resolve) => upstream.close(resolve));
  });

  test('restart on same data dir falls back', async () => {
    const port = (upstream.address() as AddressInfo).port;
    // Both proxies reject every snapshot that has the route "poison".
    const first = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-1', {
      rejectRoute: 'poison',
    });
    let fresh: FleetProxy | undefined;
    try {
      await waitForPort('127.0.0.1', first.adminPort);
      const good = writeUsersConfig(fleet.dir, 'good.yaml', port, { 'get-user': '/users/:id' });
      const applied = await loomctl(fleet.controlPlane, ['apply', '-f', good, '--wait']);
      assert.equal(applied.code, 0, applied.stdout + applied.stderr);
      const accepted = (await fleetStatus(fleet.controlPlane)).version;
      const acceptedFile = join(fleet.dir, 'store', 'accepted.json');
      await waitFor('the data dir to record the accepted version', 10_000, () => {
        try {
          return readFileSync(acceptedFile, 'utf8').includes(`"version":${accepted},`);
        } catch {
          return false;
        }
      });

      const poisoned = writeUsersConfig(fleet.dir, 'poisoned.yaml', port, {
        'get-user': '/users/:id',
        poison: '/poison',
      });
      const rejected = await loomctl(fleet.controlPlane, ['apply', '-f', poisoned]);
      assert.equal(rejected.code, 0, rejected.stdout + rejected.stderr);
      await waitFor('proxy-1 to nack the poisoned version', 15_000, async () => {
        const current = await fleetStatus(fleet.controlPlane);
        return current.version > accepted && current.proxies[0]?.nackedVersion === current.version;
      });
      const nacked = (await fleetStatus(fleet.controlPlane)).version;

      await fleet.stopControlPlane();
      await fleet.startControlPlane();
      fresh = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-after-restart', {
        rejectRoute: 'poison',
      });
      await waitForPort('127.0.0.1', fresh.adminPort);
      await waitForReady(fresh, 'proxy-after-restart to serve the recorded accepted version');
      const record = await proxyRecord(fleet.controlPlane, 'proxy-after-restart');
      assert.equal(record?.nackedVersion, nacked);
      assert.equal(record?.fallbackVersion, accepted);
      const response = await httpGet(fresh.url('/users/7'));
      assert.equal(response.status, 200);
    } finally {
      await fresh?.process.stop();
      await first.process.stop();
    }
  });
});
