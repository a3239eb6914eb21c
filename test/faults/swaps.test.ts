import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { after, before, describe, test } from 'node:test';

import { pino } from 'pino';

import { DataPlane } from '../../data-plane/data-plane.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { findFreePort } from '../helpers/ports.js';
import { applyConfig, fixtureConfig, startLoad, waitForVersion, Workspace } from './harness.js';

/** Starts an upstream that counts its connections and echoes Upgrade tunnels back. */
async function startCountingUpstream(): Promise<{
  server: Server;
  port: number;
  connections(): number;
}> {
  let connections = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const delay = req.url?.includes('slow') ? 300 : 0;
      setTimeout(() => res.end('ok'), delay);
    });
  });
  server.on('connection', () => {
    connections += 1;
  });
  server.on('upgrade', (_req, socket: Socket) => {
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n',
    );
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, connections: () => connections };
}

/** Opens an Upgrade tunnel through the proxy; resolves undefined without a 101 response. */
function openTunnel(port: number): Promise<Socket | undefined> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      path: '/hold/tunnel',
      headers: { connection: 'upgrade', upgrade: 'echo' },
    });
    req.on('upgrade', (_res, socket: Socket) => resolve(socket));
    req.on('response', (res) => {
      res.resume();
      resolve(undefined);
    });
    req.on('error', reject);
    req.end();
  });
}

async function echoOver(socket: Socket, text: string): Promise<string> {
  socket.write(text);
  const [chunk] = (await once(socket, 'data')) as [Buffer];
  return chunk.toString();
}

describe('snapshot swaps', { timeout: 120_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startCountingUpstream>>;

  before(async () => {
    upstream = await startCountingUpstream();
  });

  after(() => {
    upstream.server.close();
  });

  test('100 swaps under load drop nothing', async (t) => {
    const ws = new Workspace();
    try {
      const cp = await ws.controlPlane('cp', ['--data-dir', `${ws.dir}/store`]);
      const proxy = await ws.proxy('proxy', [cp.address]);
      const first = await applyConfig(cp.address, fixtureConfig(upstream.port, 5));
      await waitForVersion(proxy.adminPort, first);
      const tunnel = await openTunnel(proxy.port);
      const load = startLoad(`http://${proxy.address}/hold/x`, {
        concurrency: 4,
        maxRequests: 100_000,
      });
      const upstreamConnectionsBefore = upstream.connections();

      let last = first;
      for (let swap = 1; swap <= 100; swap++) {
        // Routes r* change every time; the `hold` route and the upstream stay.
        last = await applyConfig(cp.address, fixtureConfig(upstream.port, 5, `-${swap}`));
      }
      await waitForVersion(proxy.adminPort, last);
      const result = await load.stop();

      assert.equal(result.failed, 0, result.failures.join('\n'));
      assert.equal(result.connections, 4, 'a keep-alive client connection was closed');
      assert.ok(result.ok > 0);
      // Pools survive swaps: the load needs at most one upstream connection per client connection.
      const opened = upstream.connections() - upstreamConnectionsBefore;
      assert.ok(opened <= 4, `${opened} upstream connections opened during the swaps`);
      process.stdout.write(
        `# 100 swaps: ${result.ok} requests, 0 failed, 4 client connections kept, ` +
          `${opened} upstream connections opened\n`,
      );

      if (tunnel === undefined) {
        t.diagnostic('proxy does not support Upgrade; tunnel check skipped');
        return;
      }
      assert.equal(await echoOver(tunnel, 'still-open'), 'still-open');
      tunnel.destroy();
    } finally {
      await ws.close();
    }
  });

  test('1000 swaps release old tables', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const collect = async () => {
      for (let i = 0; i < 3; i++) {
        gc();
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const dataPlane = new DataPlane({
      controlPlanes: [`127.0.0.1:${await findFreePort()}`],
      listen: '127.0.0.1:0',
      adminListen: '127.0.0.1:0',
      id: 'heap',
      logger: pino({ enabled: false }),
    });
    await dataPlane.start();
    const snapshot = (version: number): Snapshot => ({
      version,
      epoch: 'heap-test',
      hash: `h${version}`,
      ...fixtureConfig(upstream.port, 50, `-${version % 2}`),
    });
    const get = (path: string) =>
      new Promise<number>((resolve, reject) => {
        httpRequest({ host: '127.0.0.1', port: dataPlane.port, path }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        })
          .on('error', reject)
          .end();
      });
    try {
      await dataPlane.applySnapshot(snapshot(1));
      const firstTable = new WeakRef(dataPlane.table!);
      // A request in flight across many swaps keeps a reference to the table it started with.
      const slow = get('/hold/slow');
      for (let version = 2; version <= 100; version++)
        await dataPlane.applySnapshot(snapshot(version));
      assert.equal(await slow, 200);
      await collect();
      const baseline = process.memoryUsage().heapUsed;

      for (let version = 101; version <= 1100; version++) {
        await dataPlane.applySnapshot(snapshot(version));
        if (version % 100 === 0) assert.equal(await get('/hold/x'), 200);
      }
      await collect();
      const growth = process.memoryUsage().heapUsed - baseline;

      assert.equal(firstTable.deref(), undefined, 'the first table is still referenced');
      assert.ok(growth < 8 * 1024 * 1024, `heap grew ${growth} bytes across 1000 swaps`);
      process.stdout.write(`# 1000 swaps: heap growth ${(growth / 1024).toFixed(0)} KiB\n`);
    } finally {
      await dataPlane.stop();
    }
  });
});
