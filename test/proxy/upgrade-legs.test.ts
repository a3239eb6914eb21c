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
  within,
  type ProxyFixture,
} from './harness.js';

function handshake(path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;
}

describe('upgrade legs close together', () => {
  let proxy: ProxyFixture;
  let server: Server;
  const sockets: Socket[] = [];
  const closed: Promise<unknown>[] = [];

  before(async () => {
    // `/ws/missing` gets a 404 with Content-Length and the connection left open; others get 101.
    server = createServer((socket) => {
      sockets.push(socket);
      closed.push(new Promise((resolve) => socket.once('close', resolve)));
      socket.on('error', () => {
        // Resets are expected.
      });
      let head = '';
      const onData = (chunk: Buffer): void => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        socket.off('data', onData);
        if (head.startsWith('GET /ws/missing')) {
          socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope');
          return;
        }
        socket.write(
          'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
        );
        socket.on('data', (data: Buffer) => socket.write(data));
      };
      socket.on('data', onData);
    });
    const port = await listenNet(server);
    proxy = await startProxy({}, { sendTimeoutMs: 200, tunnelIdleTimeoutMs: 60_000 });
    proxy.publish(
      [
        { name: 'ws', path: '/ws/*', upstream: 'ws' },
        { name: 'gone', path: '/gone/*', upstream: 'gone' },
      ],
      [upstreamAt('ws', port), upstreamAt('gone', 1)],
    );
  });

  after(async () => {
    for (const socket of sockets) socket.destroy();
    await proxy.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('relays a refused upgrade and closes the upstream', async () => {
    const before = closed.length;
    const client = openRawClient(proxy.port, handshake('/ws/missing'));
    await waitForText(client.text, /^HTTP\/1\.1 404 [^]*nope$/);
    await within(client.closed, 'the client connection to close');
    await within(closed[before], 'the upstream connection to close');
  });

  it('closes the upstream when the client resets', async () => {
    const before = closed.length;
    const client = openRawClient(proxy.port, handshake('/ws/echo'));
    await waitForText(client.text, /^HTTP\/1\.1 101 /);
    client.socket.resetAndDestroy();
    await within(closed[before], 'the upstream connection to close');
  });

  it('answers 502 and closes when the upstream is unreachable', async () => {
    const client = openRawClient(proxy.port, handshake('/gone/x'));
    await within(client.closed, 'the client connection to close');
    assert.match(client.text(), /^HTTP\/1\.1 502 /);
  });

  it('keeps an idle tunnel past the send timeout', async () => {
    const client = openRawClient(proxy.port, handshake('/ws/idle'));
    await waitForText(client.text, /^HTTP\/1\.1 101 /);
    await sleep(1_200);
    assert.equal(client.socket.destroyed, false);
    client.socket.write('ping');
    await waitForText(client.text, /ping$/);
    client.socket.destroy();
  });

  it('keeps a tunnel whose client reads slowly but steadily', async () => {
    const client = openRawClient(proxy.port, handshake('/ws/steady'));
    await waitForText(client.text, /^HTTP\/1\.1 101 /);
    // Echo 4 MiB back while the client reads in bursts with pauses shorter than the timeout.
    const block = Buffer.alloc(64 * 1024, 'b');
    for (let i = 0; i < 64; i++) client.socket.write(block);
    for (let i = 0; i < 20 && !client.socket.destroyed; i++) {
      client.socket.pause();
      await sleep(100);
      client.socket.resume();
      await sleep(20);
    }
    assert.equal(client.error(), undefined);
    assert.equal(client.socket.destroyed, false);
    client.socket.destroy();
  });
});
