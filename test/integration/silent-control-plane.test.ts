import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../../scripts/processes.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';

/**
 * Starts a TCP server that accepts connections and never sends a byte. A control plane whose
 * process is stopped (SIGSTOP, a paused VM) or hung looks the same: the kernel still completes
 * the TCP handshake, but no HTTP/2 settings frame ever arrives.
 */
async function startSilentServer(): Promise<{ server: Server; port: number; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  return { server, port: (server.address() as AddressInfo).port, sockets };
}

describe('silent control-plane address', { timeout: 120_000, concurrency: 1 }, () => {
  let fleet: Fleet;
  let silent: Awaited<ReturnType<typeof startSilentServer>>;
  let proxy: FleetProxy | undefined;

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
    silent = await startSilentServer();
  });

  after(async () => {
    await proxy?.process.stop();
    for (const socket of silent.sockets) socket.destroy();
    silent.server.close();
    await fleet.stop();
  });

  test('proxy moves on to the next address', async () => {
    // The first address accepts TCP and stays silent, and the second is a working control plane.
    proxy = await startProxy(
      `127.0.0.1:${silent.port},${fleet.controlPlane}`,
      fleet.dir,
      'proxy-silent-first',
    );
    const ready = waitFor(
      'proxy-silent-first to become ready through the second address',
      90_000,
      async () => (await httpGet(`http://127.0.0.1:${proxy!.adminPort}/readyz`)).status === 200,
    );
    await assert.doesNotReject(ready, fleet.logs());
  });
});
