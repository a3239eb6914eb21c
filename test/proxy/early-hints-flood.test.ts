import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  listenNet,
  openRawClient,
  startProxy,
  upstreamAt,
  waitForText,
  type ProxyFixture,
} from './harness.js';

/** One 103 response with an 8 KiB Link field. */
const EARLY_HINTS = `HTTP/1.1 103 Early Hints\r\nLink: </${'l'.repeat(8 * 1024)}>; rel=preload\r\n\r\n`;

describe('early hints without end', () => {
  let server: Server;
  let proxy: ProxyFixture;
  const upstreamSockets = new Set<Socket>();
  /** Server side of the latest client connection of the proxy. */
  let clientConnection: Socket | undefined;

  before(async () => {
    // Sends a 103 every millisecond for ever, and no final response.
    server = createServer((socket) => {
      upstreamSockets.add(socket);
      socket.on('error', () => {
        // The proxy may cut the connection.
      });
      socket.once('data', async () => {
        while (!socket.destroyed) {
          if (!socket.write(EARLY_HINTS)) await sleep(1);
          await sleep(1);
        }
      });
    });
    const port = await listenNet(server);
    proxy = await startProxy();
    proxy.server.on('connection', (socket: Socket) => (clientConnection = socket));
    proxy.publish([{ name: 'app', path: '/*', upstream: 'app' }], [upstreamAt('app', port)]);
  });

  after(async () => {
    for (const socket of upstreamSockets) socket.destroy();
    await proxy.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('forwards a few early hints', async () => {
    const client = openRawClient(proxy.port, 'GET /hints HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitForText(client.text, /103 Early Hints/);
    // The upstream sends about a thousand more while the client waits.
    await sleep(1_000);
    const hints = client.text().match(/HTTP\/1\.1 103 /g)?.length ?? 0;
    client.socket.destroy();
    await client.closed;
    assert.ok(hints >= 1, 'the client got no early hints');
    assert.ok(hints <= 8, `the client got ${hints} early hints`);
    assert.equal(clientConnection?.writableLength ?? 0, 0);
  });
});
