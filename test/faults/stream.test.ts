import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';

import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';

import { AdminClient } from '../../cli/admin-client.js';
import { ControlPlane } from '../../control-plane/control-plane.js';
import { SNAPSHOT_SERVICE_DEFINITION } from '../../control-plane/stream/snapshot-service.js';
import { SnapshotClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { applyConfig, fixtureConfig, peakRssKiB, startUpstream, Workspace } from './harness.js';
import { findFreePort } from '../helpers/ports.js';
import { TcpRelay } from './relay.js';

/** Log lines of one or more components, parsed, kept in memory. */
class CapturedLog {
  readonly lines: Record<string, unknown>[] = [];
  readonly logger: Logger;

  constructor(level = 'debug') {
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString().split('\n')) {
          if (line) this.lines.push(JSON.parse(line) as Record<string, unknown>);
        }
        done();
      },
    });
    this.logger = pino({ level }, sink);
  }

  count(message: string, match: Record<string, unknown> = {}): number {
    return this.lines.filter(
      (line) =>
        line.msg === message && Object.entries(match).every(([key, value]) => line[key] === value),
    ).length;
  }
}

/** Creates a snapshot client that records what it applies, for tests without a proxy. */
function testClient(
  addresses: string[],
  id: string,
  logger: Logger,
  extra: { keepaliveTimeMs?: number; held?: { epoch: string; version: number } } = {},
) {
  let held = extra.held ?? { epoch: '', version: 0 };
  const applied: Snapshot[] = [];
  const client = new SnapshotClient({
    addresses,
    proxyId: id,
    proxyAddress: `127.0.0.1:0`,
    logger,
    held: () => held,
    apply: async (snapshot) => {
      applied.push(snapshot);
      held = { epoch: snapshot.epoch, version: snapshot.version };
    },
    keepaliveTimeMs: extra.keepaliveTimeMs,
  });
  return { client, applied, held: () => held };
}

describe('snapshot stream faults', { timeout: 150_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let dir: string;

  before(async () => {
    upstream = await startUpstream('echo');
    dir = mkdtempSync(join(tmpdir(), 'loom-stream-'));
  });

  after(() => {
    upstream.server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startControlPlane(
    name: string,
    options: Partial<Parameters<typeof ControlPlane.start>[0]> = {},
  ) {
    const log = new CapturedLog();
    const controlPlane = await ControlPlane.start({
      listen: '127.0.0.1:0',
      etcdEndpoints: [],
      dataDir: join(dir, name),
      logger: log.logger,
      ...options,
    });
    return { controlPlane, log, address: `127.0.0.1:${controlPlane.port}` };
  }

  test('idle stream survives keepalive', async () => {
    const { controlPlane, log, address } = await startControlPlane('keepalive', {
      keepalive: { timeMs: 1_000, minPingIntervalMs: 400 },
    });
    const clientLog = new CapturedLog();
    const { client } = testClient([address], 'idle-proxy', clientLog.logger, {
      keepaliveTimeMs: 500,
    });
    try {
      client.start();
      await waitFor('stream up', 5_000, () => client.state === 'streaming');
      // Nothing is sent for ten client keepalive intervals.
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      assert.equal(client.state, 'streaming');
      assert.equal(clientLog.count('control plane connected'), 1);
      assert.equal(clientLog.count('control plane lost, reconnecting'), 0);
      assert.equal(log.count('proxy connected'), 1);
      assert.equal(log.count('proxy disconnected'), 0);
    } finally {
      client.stop();
      await controlPlane.stop();
    }
  });

  test('refused address logs a tidy reason', async () => {
    const port = await findFreePort();
    const log = new CapturedLog();
    const { client } = testClient([`127.0.0.1:${port}`], 'refused-proxy', log.logger);
    try {
      client.start();
      await waitFor(
        'a reconnect line',
        10_000,
        () => log.count('control plane lost, reconnecting') > 0,
      );
      const lost = log.lines.find((line) => line.msg === 'control plane lost, reconnecting');
      assert.match(String(lost?.reason), /last error: connect ECONNREFUSED/);
      assert.doesNotMatch(String(lost?.reason), /Resolution note/);
    } finally {
      client.stop();
    }
  });

  test('reset connection resubscribes', async () => {
    const { controlPlane, log, address } = await startControlPlane('reset');
    const relay = await TcpRelay.start(controlPlane.port);
    const clientLog = new CapturedLog();
    const { client, applied } = testClient([relay.address], 'reset-proxy', clientLog.logger);
    try {
      const v1 = await applyConfig(address, fixtureConfig(upstream.port, 1));
      client.start();
      await waitFor('v1 applied', 5_000, () => applied.at(-1)?.version === v1);

      relay.reset();
      await waitFor('reconnect', 10_000, () => log.count('proxy connected') === 2);
      const reconnect = log.lines.filter((line) => line.msg === 'proxy connected')[1];
      assert.equal(reconnect.version, v1);
      const lost = clientLog.lines.find((line) => line.msg === 'control plane lost, reconnecting');
      assert.ok(lost, 'client logged no reconnect');
      const v2 = await applyConfig(address, fixtureConfig(upstream.port, 2));
      await waitFor('v2 applied', 5_000, () => applied.at(-1)?.version === v2);
      assert.deepEqual(
        applied.map((snapshot) => snapshot.version),
        [v1, v2],
      );
    } finally {
      client.stop();
      await relay.close();
      await controlPlane.stop();
    }
  });

  test('client ignores older snapshots', async () => {
    // A server that sends versions 5, 3 and 7 whatever the client holds, as a broken replica might.
    const server = new Server();
    server.addService(SNAPSHOT_SERVICE_DEFINITION, {
      Stream(call: ServerDuplexStream<unknown, Buffer>) {
        call.once('data', () => {
          for (const version of [5, 3, 7]) {
            const snapshot = {
              version,
              epoch: 'e1',
              hash: `h${version}`,
              routes: [],
              upstreams: [],
            };
            call.write(Buffer.from(StreamResponse.encode({ snapshot }).finish()));
          }
        });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    const { client, applied } = testClient([`127.0.0.1:${port}`], 'p', pino({ enabled: false }), {
      held: { epoch: 'e1', version: 4 },
    });
    try {
      client.start();
      await waitFor('version 7', 5_000, () => applied.at(-1)?.version === 7);
      assert.ok(!applied.some((snapshot) => snapshot.version < 5));
    } finally {
      client.stop();
      server.forceShutdown();
    }
  });

  test('malformed snapshot message reconnects', async () => {
    // The first stream gets a message cut short, the next one a valid snapshot.
    let streams = 0;
    const server = new Server();
    server.addService(SNAPSHOT_SERVICE_DEFINITION, {
      Stream(call: ServerDuplexStream<unknown, Buffer>) {
        const stream = ++streams;
        call.once('data', () => {
          const snapshot = { version: 7, epoch: 'e1', hash: 'h7', routes: [], upstreams: [] };
          const bytes = Buffer.from(StreamResponse.encode({ snapshot }).finish());
          call.write(stream === 1 ? bytes.subarray(0, bytes.length - 2) : bytes);
        });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    const log = new CapturedLog();
    const { client, applied } = testClient([`127.0.0.1:${port}`], 'p', log.logger);
    try {
      client.start();
      await waitFor('version 7', 10_000, () => applied.at(-1)?.version === 7);
      assert.equal(applied.length, 1);
      assert.equal(streams, 2);
      const lost = log.lines.filter((line) => line.msg === 'control plane lost, reconnecting');
      assert.equal(lost.length, 1);
      assert.match(String(lost[0].reason), /^malformed snapshot message: /);
    } finally {
      client.stop();
      server.forceShutdown();
    }
  });

  test('admission bounds open streams', async () => {
    const { controlPlane, log, address } = await startControlPlane('limits', { maxStreams: 2 });
    const clients = ['a', 'b', 'c'].map((id) =>
      testClient([address], id, pino({ enabled: false })),
    );
    try {
      for (const { client } of clients.slice(0, 2)) client.start();
      await waitFor('two streams', 5_000, () => controlPlane.openStreams === 2);
      clients[2].client.start();
      await waitFor('refusal logged', 5_000, () => log.count('streams refused') >= 1);
      assert.notEqual(clients[2].client.state, 'streaming');
      assert.equal(controlPlane.openStreams, 2);

      clients[0].client.stop();
      await waitFor('third stream admitted', 15_000, () => clients[2].client.state === 'streaming');
      assert.equal(controlPlane.openStreams, 2);
    } finally {
      for (const { client } of clients) client.stop();
      await controlPlane.stop();
    }
  });

  test('oversized apply is rejected', async () => {
    const { controlPlane, address } = await startControlPlane('message-limit', {
      maxReceiveMessageBytes: 4_096,
    });
    try {
      await assert.rejects(applyConfig(address, fixtureConfig(upstream.port, 200)), (error) => {
        assert.match(String(error), /over the limit of 4096 bytes/);
        assert.match(String(error), /raise --max-message-bytes/);
        return true;
      });
      assert.ok((await applyConfig(address, fixtureConfig(upstream.port, 1))) > 0);
    } finally {
      await controlPlane.stop();
    }
  });

  // LOOM_STORM_COMPARE=1 also runs the storm without pacing, for the comparison in
  // docs/reliability.md; LOOM_STORM_ROUTES sets the size of the snapshot.
  const stormRates = process.env.LOOM_STORM_COMPARE === '1' ? [25, 100_000] : [25];
  const stormRoutes = Number(process.env.LOOM_STORM_ROUTES ?? 20);
  for (const rate of stormRates) {
    test(`reconnect storm at ${rate} per second`, async () => {
      await reconnectStorm(rate);
    });
  }

  async function reconnectStorm(rate: number): Promise<void> {
    const ws = new Workspace();
    const store = ['--data-dir', join(ws.dir, 'store'), '--stream-admission-rate', String(rate)];
    const counts = new Map<number, number>();
    // Counts every connection attempt per second since the restart.
    let restartedAt = 0;
    const logger = pino(
      { level: 'debug' },
      new Writable({
        write: (chunk: Buffer, _encoding, done) => {
          if (restartedAt > 0 && chunk.includes('"to":"connecting"')) {
            const second = Math.floor((performance.now() - restartedAt) / 1000);
            counts.set(second, (counts.get(second) ?? 0) + 1);
          }
          done();
        },
      }),
    );
    const fleet: ReturnType<typeof testClient>[] = [];
    try {
      let cp = await ws.controlPlane('cp', store);
      const v1 = await applyConfig(cp.address, fixtureConfig(upstream.port, stormRoutes));
      for (let i = 0; i < 200; i++) fleet.push(testClient([cp.address], `storm-${i}`, logger));
      for (const member of fleet) member.client.start();
      await waitFor('fleet at v1', 60_000, () => fleet.every((m) => m.held().version === v1));

      await cp.process.kill();
      await new Promise((resolve) => setTimeout(resolve, 500));
      restartedAt = performance.now();
      cp = await ws.controlPlane('cp-restarted', store, cp.port);
      await waitForPort('127.0.0.1', cp.port);
      const v2 = await applyConfig(cp.address, fixtureConfig(upstream.port, stormRoutes + 1));
      await waitFor('fleet at v2', 90_000, () => fleet.every((m) => m.held().version === v2));
      const allAckedMs = performance.now() - restartedAt;
      const client = new AdminClient(cp.address);
      const status = await client.status().finally(() => client.close());
      const rssKiB = peakRssKiB(cp.process.child.pid);

      assert.equal(status.proxies.filter((proxy) => proxy.connected).length, 200);
      const perSecond = [...counts.entries()].sort((a, b) => a[0] - b[0]);
      process.stdout.write(
        `# reconnect storm at ${rate}/s: 200 clients at v2 ` +
          `${Math.round(allAckedMs)} ms after the restart; ` +
          `control-plane peak RSS ${rssKiB} KiB; connection attempts per second ` +
          `${perSecond.map(([second, count]) => `${second}s:${count}`).join(' ')}\n`,
      );
    } finally {
      for (const member of fleet) member.client.stop();
      await ws.close();
    }
  }
});
