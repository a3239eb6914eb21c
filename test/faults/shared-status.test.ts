// Fault tests of the proxy status that control-plane replicas share through etcd: real etcd,
// real control-plane processes, and real proxies or bare snapshot streams on 127.0.0.1.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { credentials } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';

import { AdminClient } from '../../cli/admin-client.js';
import { decodeSharedProxy } from '../../control-plane/fleet/fleet-records.js';
import {
  snapshotServiceClient,
  type SnapshotStreamClient,
} from '../../data-plane/snapshot-client/snapshot-client.js';
import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { findFreePort } from '../helpers/ports.js';
import {
  applyConfig,
  fixtureConfig,
  fixtureText,
  logLines,
  readyz,
  startUpstream,
  waitForVersion,
  Workspace,
  type Member,
} from './harness.js';
import { TcpRelay } from './relay.js';

const FLEET_DIRECTORY = '/loom/__meta/fleet/';

async function statusOf(controlPlane: Member): Promise<StatusResponse> {
  const client = new AdminClient(controlPlane.address);
  try {
    return await client.status({ version: 0 }, 15_000);
  } finally {
    client.close();
  }
}

async function proxyOn(controlPlane: Member, id: string): Promise<ProxyStatus | undefined> {
  return (await statusOf(controlPlane)).proxies.find((proxy) => proxy.id === id);
}

/** Returns whether the fleet record of proxy `flapping` shows it connected; undefined without one. */
async function flappingConnected(client: Etcd3): Promise<boolean | undefined> {
  const records = await client.getAll().prefix(FLEET_DIRECTORY).strings();
  for (const [key, value] of Object.entries(records)) {
    if (key.endsWith('/flapping')) return decodeSharedProxy(value)?.state.connected;
  }
  return undefined;
}

/**
 * Opens and cancels a bare stream of proxy id `flapping` `cycles` times. The loop waits for the
 * fleet record to show each connect and each disconnect, so each is a fleet write of its own. A
 * stream cancelled before the control plane admitted it would make no write at all.
 */
async function flap(streams: BareStreams, etcd: EtcdProcess, cycles: number): Promise<void> {
  const client = new Etcd3({ hosts: etcd.endpoint });
  try {
    for (let cycle = 0; cycle < cycles; cycle++) {
      for (const step of ['connect', 'disconnect'] as const) {
        if (step === 'connect') streams.open('flapping');
        else streams.cancel('flapping');
        await waitFor(`the fleet write of ${step} ${cycle + 1}`, 10_000, async () => {
          return (await flappingConnected(client)) === (step === 'connect');
        });
      }
    }
  } finally {
    client.close();
  }
}

/** Bare snapshot streams that send a hello and nothing else, as many proxies would. */
class BareStreams {
  readonly #Client = snapshotServiceClient((bytes) => bytes);
  readonly #client: SnapshotStreamClient<Buffer>;
  readonly #calls = new Map<string, ReturnType<SnapshotStreamClient<Buffer>['stream']>>();

  constructor(controlPlane: string) {
    this.#client = new this.#Client(controlPlane, credentials.createInsecure(), {
      'grpc.max_send_message_length': 16 * 1024 * 1024,
      'grpc.use_local_subchannel_pool': 1,
    });
  }

  open(proxyId: string): void {
    const call = this.#client.stream();
    call.on('error', () => undefined);
    call.on('data', () => undefined);
    call.write({
      kind: {
        $case: 'hello',
        hello: {
          proxyId,
          epoch: '',
          version: 0,
          address: '127.0.0.1:9',
          nacked: [],
          instanceId: '',
        },
      },
    });
    this.#calls.set(proxyId, call);
  }

  cancel(proxyId: string): void {
    this.#calls.get(proxyId)?.cancel();
    this.#calls.delete(proxyId);
  }

  close(): void {
    for (const id of [...this.#calls.keys()]) this.cancel(id);
    this.#client.close();
  }
}

describe('replicas sharing proxy status through etcd', { timeout: 600_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  const cleanups: (() => Promise<void> | void)[] = [];

  async function setUp(etcdArgs: string[] = []): Promise<{ etcd: EtcdProcess; ws: Workspace }> {
    upstream ??= await startUpstream('echo');
    const etcd = await startEtcd({ extraArgs: etcdArgs });
    const ws = new Workspace();
    cleanups.push(
      () => ws.close(),
      () => etcd.stop(),
    );
    return { etcd, ws };
  }

  /** Starts etcd, replicas cp-a and cp-b, and proxy p2 on cp-b, listed by cp-a. */
  async function twoReplicas() {
    const { etcd, ws } = await setUp();
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await ws.proxy('p2', [second.address]);
    await waitFor('p2 connected on cp-a', 20_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === true;
    });
    return { etcd, ws, first, second };
  }

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  after(() => {
    upstream?.server.close();
  });

  test('backup restore shows gone proxy disconnected', { timeout: 120_000 }, async () => {
    const { etcd, ws } = await setUp();
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await ws.proxy('p1', [first.address]);
    const p2 = await ws.proxy('p2', [second.address]);
    await waitFor('p2 connected on cp-a', 20_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === true;
    });

    const backup = join(ws.dir, 'backup.db');
    await etcd.saveSnapshot(backup);
    await p2.process.stop();
    await waitFor('p2 disconnected on cp-a', 10_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === false;
    });

    await etcd.restoreSnapshot(backup);
    const restoredAt = Date.now();
    // A status call reuses a read of the records for 100 ms, and a restore can take less, so
    // without this pause the first read below can be one from before the restore.
    await sleep(200);
    // The restored record of p2 shows it connected, as it was in the backup, until cp-b
    // writes it again, once its watch hears from etcd again. cp-a read the newer record
    // before the restore, so it must not list p2 as connected in between. The wait covers
    // the replicas' reconnect and that check. A replica reports a fleetError while it cannot
    // read the records, so the wait also needs both replicas to read etcd again.
    const connectedReads: number[] = [];
    let onFirst: ProxyStatus | undefined;
    let onSecond: ProxyStatus | undefined;
    await waitFor('p2 disconnected on both replicas after the rewrite', 30_000, async () => {
      const rewrites = [
        ...logLines(second, 'fleet records changed outside this control plane'),
        ...logLines(second, 'fleet lease lost'),
      ];
      const rewritten = rewrites.some((line) => Number(line.time) > restoredAt);
      const readStartedAt = Date.now();
      const [firstStatus, secondStatus] = [await statusOf(first), await statusOf(second)];
      onFirst = firstStatus.proxies.find((proxy) => proxy.id === 'p2');
      onSecond = secondStatus.proxies.find((proxy) => proxy.id === 'p2');
      if (onFirst?.connected === true) connectedReads.push(readStartedAt - restoredAt);
      const bothRead = firstStatus.fleetError === '' && secondStatus.fleetError === '';
      return rewritten && bothRead && onFirst?.connected !== true && onSecond?.connected === false;
    });
    assert.deepEqual(connectedReads, [], `cp-a listed p2 as connected again\n${ws.logs(15)}`);
    const file = join(ws.dir, 'loom.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['a', 'b']));
    const result = await loomctl(first.address, [
      'apply',
      '-f',
      file,
      '--prune',
      '--wait',
      '--timeout',
      '10s',
    ]);

    const detail = `${result.stdout}\n${result.stderr}\n${ws.logs(15)}`;
    assert.equal(onSecond?.connected, false, 'cp-b streams p2 no longer');
    assert.notEqual(onFirst?.connected, true, `cp-a lists p2 as connected\n${detail}`);
    assert.equal(result.code, 0, detail);
  });

  test('deleted fleet records are written again', { timeout: 60_000 }, async () => {
    const { etcd, ws, first } = await twoReplicas();

    await runEtcdctl([`--endpoints=${etcd.endpoint}`, 'del', '--prefix', FLEET_DIRECTORY]);
    // A status call reuses a read of the records for 100 ms.
    await sleep(200);
    await waitFor('p2 connected on cp-a again', 20_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === true;
    }).catch(() => undefined);
    const listed = await proxyOn(first, 'p2');
    assert.equal(listed?.connected, true, `cp-a lost p2 for good\n${ws.logs(10)}`);
  });

  test('wiped prefix brings records back', { timeout: 60_000 }, async () => {
    const { etcd, first } = await twoReplicas();

    await runEtcdctl([`--endpoints=${etcd.endpoint}`, 'del', '--prefix', '/loom/']);
    await waitFor('p2 connected on cp-a again', 20_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === true;
    });
  });

  test('revoked lease brings records back', { timeout: 60_000 }, async () => {
    const { etcd, first } = await twoReplicas();

    const client = new Etcd3({ hosts: etcd.endpoint });
    cleanups.push(() => client.close());
    const { leases } = await client.leaseClient.leaseLeases();
    assert.equal(leases.length, 1);
    await client.leaseClient.leaseRevoke({ ID: leases[0].ID });
    // A status call reuses a read of the records for 100 ms.
    await sleep(200);
    assert.equal(await proxyOn(first, 'p2'), undefined, 'the revoke deleted the record');
    await waitFor('p2 connected on cp-a again', 20_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === true;
    });
  });

  test('unreadable record is not dropped silently', { timeout: 60_000 }, async () => {
    const { etcd, first } = await twoReplicas();

    // A record of another format, as a newer control plane would leave it, under the lease of
    // the replica that wrote it. A record without a lease is ignored as a hand edit.
    const client = new Etcd3({ hosts: etcd.endpoint });
    cleanups.push(() => client.close());
    // Record keys only: each replica's own key, `<directory><replica>`, has no proxy part.
    const keys = (await client.getAll().prefix(FLEET_DIRECTORY).keys()).filter((key) =>
      key.slice(FLEET_DIRECTORY.length).includes('/'),
    );
    assert.equal(keys.length, 1, keys.join());
    await client.kv.put({
      key: Buffer.from(keys[0]!),
      value: Buffer.from('{"format":2}'),
      ignore_lease: true,
    });
    await sleep(1_000);

    const status = await statusOf(first);
    const listed = status.proxies.some((proxy) => proxy.id === 'p2');
    assert.ok(listed || status.fleetError !== '', 'cp-a drops p2 and reports nothing');
  });

  test('graceful replica stop keeps the version', { timeout: 60_000 }, async () => {
    const { etcd, ws } = await setUp();
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    const before = await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await waitFor('cp-a to serve the applied version', 10_000, async () => {
      return (await statusOf(first)).version === before;
    });
    await ws.proxy('p2', [second.address]);
    await waitFor('p2 connected on cp-a', 20_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === true;
    });

    assert.equal(await second.process.stop(), 0);
    const third = await ws.controlPlane('cp-c', ['--etcd', etcd.endpoint]);
    await waitFor('cp-c to serve', 10_000, async () => (await statusOf(third)).version > 0);
    assert.equal((await statusOf(third)).version, before);
  });

  test('proxy reconnects keep replicas on one version', { timeout: 120_000 }, async () => {
    const { etcd, ws } = await setUp();
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const before = await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await waitFor('cp-a to serve the applied version', 10_000, async () => {
      return (await statusOf(first)).version === before;
    });
    const thirdPort = await findFreePort();
    const p1 = await ws.proxy('p1', [first.address, `127.0.0.1:${thirdPort}`]);
    await waitForVersion(p1.adminPort, before);

    // Each connect and each disconnect is one fleet write of its own, so the loop makes 80
    // writes and no configuration change.
    const streams = new BareStreams(first.address);
    cleanups.push(() => streams.close());
    await flap(streams, etcd, 40);

    const third = await ws.controlPlane('cp-c', ['--etcd', etcd.endpoint], thirdPort);
    await waitFor('cp-c to serve', 10_000, async () => (await statusOf(third)).version > 0);
    const running = (await statusOf(first)).version;
    const started = (await statusOf(third)).version;

    // p1 moves to cp-c, which sends it the same configuration under its own version.
    await first.process.kill();
    await waitFor('p1 to be served by cp-c', 20_000, async () => {
      const status = await statusOf(third);
      const onThird = status.proxies.find((proxy) => proxy.id === 'p1');
      if (onThird?.connected !== true || !onThird.controlPlane.endsWith(`:${third.port}`)) {
        return false;
      }
      // cp-c sends a snapshot only when p1's hello names another version, and p1 acks it.
      return onThird.snapshotsSent === 0 || onThird.ackedVersion === status.version;
    }).catch(() => undefined);
    const served = (await readyz(p1.adminPort)).body.version;
    const applied = readFileSync(p1.logFile, 'utf8').match(/"msg":"snapshot applied"/g) ?? [];

    const detail = `cp-a ${running}, cp-c ${started}, p1 serves ${served}, applied ${applied.length}`;
    assert.equal(running, before, 'cp-a kept its version');
    assert.equal(started, running, `a new replica numbered the configuration again: ${detail}`);
    assert.equal(applied.length, 1, `p1 applied one configuration more than once: ${detail}`);
  });

  test('etcd restart after reconnects keeps the version', { timeout: 120_000 }, async () => {
    const { etcd, ws } = await setUp();
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const before = await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await waitFor('cp-a to serve the applied version', 10_000, async () => {
      return (await statusOf(first)).version === before;
    });
    const streams = new BareStreams(first.address);
    cleanups.push(() => streams.close());
    await flap(streams, etcd, 40);

    const restarted = Date.now();
    await etcd.restart();
    // The watch breaks with etcd, and cp-a reads the store again once it reconnects.
    await waitFor('cp-a to read etcd again after the restart', 20_000, () => {
      return logLines(first, 'sync state changed').some((line) => {
        return line.to === 'watching' && Number(line.time) > restarted;
      });
    }).catch(() => undefined);
    const after = (await statusOf(first)).version;
    assert.equal(after, before, `cp-a numbered its configuration again\n${ws.logs(12)}`);
  });

  test('oversized proxy id spares other records', { timeout: 90_000 }, async () => {
    const { etcd, ws } = await setUp();
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await ws.proxy('p1', [first.address]);
    await waitFor('p1 connected on cp-b', 20_000, async () => {
      return (await proxyOn(second, 'p1'))?.connected === true;
    });

    // The record's key and value each contain the 1 MiB id, so its write exceeds etcd's
    // default --max-request-bytes of 1.5 MiB.
    const streams = new BareStreams(first.address);
    cleanups.push(() => streams.close());
    streams.open('x'.repeat(1024 * 1024));
    await sleep(1_000);

    const file = join(ws.dir, 'loom.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['a', 'b']));
    const result = await loomctl(second.address, [
      'apply',
      '-f',
      file,
      '--prune',
      '--wait',
      '--timeout',
      '10s',
    ]);
    const status = await statusOf(second);
    const p1 = status.proxies.find((proxy) => proxy.id === 'p1');
    const target = Number(/version (\d+)/.exec(result.stdout + result.stderr)?.[1] ?? 0);
    const detail = `${result.stdout}\n${result.stderr}\n${ws.logs(8)}`;
    assert.equal(status.fleetError, '', 'cp-b reads etcd');
    assert.equal(p1?.ackedVersion, target, `cp-b shows p1 at an old version\n${detail}`);
    assert.equal(result.code, 0, detail);
  });

  test('small --max-txn-ops still lists proxies', { timeout: 60_000 }, async () => {
    const { etcd, ws } = await setUp(['--max-txn-ops=16']);
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    await applyConfig(first.address, fixtureConfig(upstream.port, 1));

    const streams = new BareStreams(first.address);
    cleanups.push(() => streams.close());
    for (let index = 0; index < 20; index++) streams.open(`bare-${index}`);
    await waitFor('20 proxies on cp-a', 10_000, async () => {
      return (await statusOf(first)).proxies.filter((proxy) => proxy.connected).length === 20;
    });
    await waitFor('20 proxies on cp-b', 10_000, async () => {
      return (await statusOf(second)).proxies.filter((proxy) => proxy.connected).length === 20;
    }).catch(() => undefined);

    const status = await statusOf(second);
    const listed = status.proxies.filter((proxy) => proxy.connected).length;
    const complete = listed === 20 || status.fleetError !== '';
    assert.ok(complete, `cp-b lists ${listed} of 20 proxies with no fleetError\n${ws.logs(6)}`);
  });

  test('fleet of 1,050 proxies lists fully', { timeout: 120_000 }, async () => {
    const { etcd, ws } = await setUp();
    const admission = ['--stream-admission-rate', '1000'];
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint, ...admission]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    await applyConfig(first.address, fixtureConfig(upstream.port, 1));

    // More records than one page of the fleet read (1,000) and than one write (100).
    const streams = new BareStreams(first.address);
    cleanups.push(() => streams.close());
    for (let index = 0; index < 1_050; index++) streams.open(`bare/${index}%é`);
    await waitFor('1,050 proxies on cp-b', 30_000, async () => {
      const listed = (await statusOf(second)).proxies.filter((proxy) => proxy.connected);
      return listed.length === 1_050;
    });
    const ids = (await statusOf(second)).proxies.map((proxy) => proxy.id);
    assert.ok(ids.includes('bare/7%é'), ids.slice(0, 5).join());
  });

  test('stop with etcd blackholed ends in time', { timeout: 90_000 }, async () => {
    const { etcd, ws } = await setUp();
    const relay = await TcpRelay.start(etcd.clientPort);
    cleanups.push(() => relay.close());
    const first = await ws.controlPlane('cp-a', ['--etcd', `http://${relay.address}`]);
    await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await ws.proxy('p1', [first.address]);
    await waitFor('p1 connected on cp-a', 20_000, async () => {
      return (await proxyOn(first, 'p1'))?.connected === true;
    });

    relay.setMode('blackhole');
    relay.freezeOpen();
    const started = Date.now();
    const code = await first.process.stop(60_000);
    const elapsedMs = Date.now() - started;
    assert.equal(code, 0, ws.logs(10));
    // Kubernetes kills a pod 30 s after SIGTERM by default. NOTE: the stop waits for a fleet
    // write in flight and then for the record delete, one 5 s request timeout each.
    assert.ok(elapsedMs < 30_000, `stop took ${elapsedMs} ms\n${ws.logs(10)}`);
  });

  test('killed replica hands its proxy over', { timeout: 90_000 }, async () => {
    const { etcd, ws } = await setUp();
    const first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    await applyConfig(first.address, fixtureConfig(upstream.port, 1));
    await ws.proxy('p1', [first.address]);
    await ws.proxy('p2', [second.address, first.address]);
    await waitFor('p2 connected on cp-a', 20_000, async () => {
      return (await proxyOn(first, 'p2'))?.connected === true;
    });
    const client = new Etcd3({ hosts: etcd.endpoint });
    cleanups.push(() => client.close());
    const { leases: leasesBefore } = await client.leaseClient.leaseLeases();
    assert.equal(leasesBefore.length, 2, 'one lease per replica');

    await second.process.kill();
    const file = join(ws.dir, 'loom.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['a', 'b']));
    const result = await loomctl(first.address, [
      'apply',
      '-f',
      file,
      '--prune',
      '--wait',
      '--timeout',
      '20s',
    ]);
    const detail = `${result.stdout}\n${result.stderr}\n${ws.logs(8)}`;
    assert.equal(result.code, 0, detail);
    assert.match(result.stdout, /applied by 2 of 2 proxies/, detail);

    // The records of cp-b outlive it until its lease expires (10 s).
    await waitFor("the expiry of cp-b's lease", 20_000, async () => {
      const { leases } = await client.leaseClient.leaseLeases();
      return leasesBefore.some((lease) => !leases.some((current) => current.ID === lease.ID));
    });
    // A status call reuses a read of the records for 100 ms.
    await sleep(200);
    const listed = (await statusOf(first)).proxies.filter((proxy) => proxy.id === 'p2');
    assert.equal(listed.length, 1);
    assert.equal(listed[0].connected, true);
    assert.equal(listed[0].controlPlane.split(':').at(-1), String(first.port));
  });

  test('records return after an etcd partition heals', { timeout: 120_000 }, async () => {
    const { etcd, ws } = await setUp();
    const relay = await TcpRelay.start(etcd.clientPort);
    cleanups.push(() => relay.close());
    const first = await ws.controlPlane('cp-a', ['--etcd', `http://${relay.address}`]);
    const second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    await applyConfig(second.address, fixtureConfig(upstream.port, 1));
    await ws.proxy('p1', [first.address]);
    await ws.proxy('p2', [second.address]);
    await waitFor('p1 connected on cp-b', 20_000, async () => {
      return (await proxyOn(second, 'p1'))?.connected === true;
    });

    relay.cut();
    const cutStatus = await statusOf(first);
    assert.notEqual(cutStatus.fleetError, '', 'cp-a says that the other proxies are missing');
    // The lease lasts 10 s without keepalives.
    await waitFor('p1 to leave cp-b', 20_000, async () => {
      return (await proxyOn(second, 'p1')) === undefined;
    }).catch(() => undefined);
    assert.equal(await proxyOn(second, 'p1'), undefined, 'the expired lease took p1 off cp-b');

    relay.heal();
    await waitFor('p1 back on cp-b', 20_000, async () => {
      return (await proxyOn(second, 'p1'))?.connected === true;
    });
    const file = join(ws.dir, 'loom.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['a', 'b']));
    const result = await loomctl(second.address, [
      'apply',
      '-f',
      file,
      '--prune',
      '--wait',
      '--timeout',
      '20s',
    ]);
    const detail = `${result.stdout}\n${result.stderr}\n${ws.logs(8)}`;
    assert.equal(result.code, 0, detail);
    assert.match(result.stdout, /applied by 2 of 2 proxies/, detail);
    const onFirst = await statusOf(first);
    assert.equal(onFirst.fleetError, '');
    assert.equal(onFirst.proxies.filter((proxy) => proxy.connected).length, 2);
  });
});
