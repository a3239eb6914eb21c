import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
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

describe('silent control-plane address', { timeout: 120_000 }, () => {
  let fleet: Fleet;
  let silent: Awaited<ReturnType<typeof startSilentServer>>;
  const proxies: FleetProxy[] = [];

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
    silent = await startSilentServer();
  });

  after(async () => {
    await Promise.all(proxies.map((proxy) => proxy.process.stop()));
    for (const socket of silent.sockets) socket.destroy();
    silent.server.close();
    await fleet.stop();
  });

  /** Starts a proxy whose first address is the silent server and waits until it is ready. */
  async function readyBehindSilentAddress(id: string, extraArgs: string[] = []): Promise<void> {
    const proxy = await startProxy(
      `127.0.0.1:${silent.port},${fleet.controlPlane}`,
      fleet.dir,
      id,
      {
        extraArgs,
      },
    );
    proxies.push(proxy);
    const ready = waitFor(
      `${id} to become ready through the second address`,
      60_000,
      async () => (await httpGet(`http://127.0.0.1:${proxy.adminPort}/readyz`)).status === 200,
    );
    await assert.doesNotReject(ready, fleet.logs());
  }

  test('default timeout moves to next address', async () => {
    await readyBehindSilentAddress('proxy-silent-default');

    const log = readFileSync(join(fleet.dir, 'proxy-silent-default.log'), 'utf8');
    assert.match(log, /no answer to the snapshot stream within 10000 ms/);
    assert.match(log, new RegExp(`"address":"127\\.0\\.0\\.1:${silent.port}"`));
  });

  test('--control-plane-timeout sets the wait', async () => {
    await readyBehindSilentAddress('proxy-silent-short', ['--control-plane-timeout', '500ms']);

    const log = readFileSync(join(fleet.dir, 'proxy-silent-short.log'), 'utf8');
    assert.match(log, /no answer to the snapshot stream within 500 ms/);
  });
});
