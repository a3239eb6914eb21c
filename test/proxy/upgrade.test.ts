import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  rawHeaderNames,
  sendRaw,
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

const HANDSHAKE =
  'GET /ws/chat HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: echo-protocol\r\n\r\n';

describe('proxy upgrades', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  const upstreamSockets = new Set<Socket>();
  /** Headers of the last ordinary (not upgrade) request that reached the upstream. */
  let plainHeaders: IncomingMessage['headers'] = {};
  /** Upgrade header of the last upgrade request that reached the upstream. */
  let upgradeOffered: string | undefined;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      plainHeaders = req.headers;
      res.end('plain');
    });
    // Switches /ws/* to a protocol that echoes every byte in upper case; refuses /ws/denied.
    // /ws/other and /ws/bare respond with a 101 that names another protocol or none. /ws/body
    // reads a Content-Length body first and names it in the 101.
    upstream.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      upstreamSockets.add(socket);
      upgradeOffered = req.headers.upgrade;
      if (req.url === '/ws/other' || req.url === '/ws/bare') {
        const upgrade = req.url === '/ws/other' ? 'Upgrade: other-protocol\r\n' : '';
        socket.write(`HTTP/1.1 101 Switching Protocols\r\n${upgrade}Connection: Upgrade\r\n\r\n`);
        return;
      }
      if (req.url === '/ws/body') {
        if (req.headers.expect === '100-continue') socket.write('HTTP/1.1 100 Continue\r\n\r\n');
        switchAfterBody(socket, head, Number(req.headers['content-length']));
        return;
      }
      if (req.url === '/ws/denied') {
        socket.end(
          'HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndenied',
        );
        return;
      }
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo-protocol\r\nConnection: Upgrade\r\nX-Seen-Host: ${req.headers.host}\r\n\r\n`,
      );
      if (head.length > 0) socket.write(head.toString().toUpperCase());
      socket.on('data', (chunk: Buffer) => socket.write(chunk.toString().toUpperCase()));
    });
    proxy = await startProxy({}, { tunnelIdleTimeoutMs: 300 });
    proxy.publish(
      [
        { name: 'ws', path: '/ws/*', upstream: 'ws' },
        { name: 'feed', path: '/feed', methods: ['POST', 'PUT'], upstream: 'ws' },
      ],
      [upstreamAt('ws', upstream.port)],
    );
  });

  /** Reads `length` body bytes, then responds 101 with them in X-Body and echoes the rest. */
  function switchAfterBody(socket: Socket, head: Buffer, length: number): void {
    let received = head;
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      if (received.length < length) return;
      socket.off('data', onData);
      const body = received.subarray(0, length).toString();
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo-protocol\r\nConnection: Upgrade\r\nX-Body: ${body}\r\n\r\n`,
      );
      socket.write(received.subarray(length).toString().toUpperCase());
      socket.on('data', (later: Buffer) => socket.write(later.toString().toUpperCase()));
    };
    socket.on('data', onData);
    onData(Buffer.alloc(0));
  }

  after(async () => {
    for (const socket of upstreamSockets) socket.destroy();
    await proxy.close();
    await upstream.close();
  });

  function openClient(): { socket: Socket; text(): string } {
    const socket = connect(proxy.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {
      // The tests read the outcome from what arrived.
    });
    return { socket, text: () => Buffer.concat(chunks).toString('latin1') };
  }

  async function waitFor(client: { text(): string }, pattern: RegExp): Promise<void> {
    for (let i = 0; i < 250 && !pattern.test(client.text()); i++) await sleep(20);
    assert.match(client.text(), pattern);
  }

  it('tunnels bytes both ways after 101', async () => {
    const client = openClient();
    client.socket.write(`${HANDSHAKE}early`);
    await waitFor(client, /EARLY$/);
    client.socket.write('hello');
    await waitFor(client, /HELLO$/);

    assert.match(client.text(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(client.text(), /\r\nUpgrade: echo-protocol\r\n/i);
    assert.match(client.text(), /\r\nx-seen-host: chat.test\r\n/i);
    client.socket.destroy();
  });

  it('relays a refused upgrade as a response', async () => {
    const response = await sendRaw(proxy.port, HANDSHAKE.replace('/ws/chat', '/ws/denied'));

    assert.match(response, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.ok(response.endsWith('denied'));
  });

  it('closes the upstream when the client leaves', async () => {
    const before = upstreamSockets.size;
    const client = openClient();
    client.socket.write(HANDSHAKE);
    await waitFor(client, /\r\n\r\n$/);
    const upstreamSocket = [...upstreamSockets][before];
    client.socket.destroy();

    // The upstream server allows half-open connections, so it sees the end of the stream.
    await within(once(upstreamSocket, 'end'), 'the upstream side to end');
  });

  it('closes an idle tunnel', async () => {
    const client = openClient();
    client.socket.write(HANDSHAKE);
    await waitFor(client, /\r\n\r\n$/);

    await within(once(client.socket, 'close'), 'the idle tunnel to close');
  });

  it('returns 404 for an unrouted upgrade', async () => {
    const response = await sendRaw(proxy.port, HANDSHAKE.replace('/ws/chat', '/nowhere'));

    assert.match(response, /^HTTP\/1\.1 404 Not Found\r\n/);
    assert.match(response, /route_not_found/);
  });

  it('returns 405 with Allow for an upgrade', async () => {
    const response = await sendRaw(proxy.port, HANDSHAKE.replace('/ws/chat', '/feed'));

    assert.match(response, /^HTTP\/1\.1 405 Method Not Allowed\r\n/);
    assert.match(response, /\r\nallow: POST, PUT\r\n/i);
    assert.match(response, /method_not_allowed/);
  });

  it('upgrade 405 has ordinary headers', async () => {
    const upgrade = await sendRaw(proxy.port, HANDSHAKE.replace('/ws/chat', '/feed'));
    const ordinary = await sendRaw(
      proxy.port,
      'GET /feed HTTP/1.1\r\nHost: chat.test\r\nConnection: close\r\n\r\n',
    );

    assert.match(ordinary, /^HTTP\/1\.1 405 /);
    assert.deepEqual(rawHeaderNames(upgrade).sort(), rawHeaderNames(ordinary).sort());
  });

  it('sends unforwardable upgrades as ordinary', async () => {
    const cases = [
      {
        name: 'h2c only',
        text:
          'GET /ws/chat HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
          'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
      },
      { name: 'HTTP/1.0', text: HANDSHAKE.replace('HTTP/1.1', 'HTTP/1.0') },
    ];
    for (const { name, text } of cases) {
      plainHeaders = {};
      const response = await sendRaw(proxy.port, text);

      assert.match(response, /^HTTP\/1\.1 200 OK\r\n/, name);
      assert.ok(response.endsWith('plain'), name);
      assert.equal(plainHeaders.host, 'chat.test', name);
      assert.equal(plainHeaders.upgrade, undefined, name);
      assert.equal(plainHeaders['http2-settings'], undefined, name);
    }
  });

  it('sends the head before the upgrade body', async () => {
    // The client waits for 100 Continue, so the upstream's 403 is a response to the head alone.
    const response = await sendRaw(
      proxy.port,
      'POST /ws/denied HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\n' +
        'Upgrade: echo-protocol\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n',
    );

    assert.match(response, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.ok(response.endsWith('denied'));
  });

  it('relays 100 Continue to an upgrade', async () => {
    const client = openClient();
    client.socket.write(
      'POST /ws/body HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\n' +
        'Upgrade: echo-protocol\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n',
    );
    await waitFor(client, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    client.socket.write('bodyafter');
    await waitFor(client, /AFTER$/);

    assert.match(client.text(), /\r\n\r\nHTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(client.text(), /\r\nx-body: body\r\n/i);
    client.socket.destroy();
  });

  it('drops h2c and keeps the other protocols', async () => {
    const client = openClient();
    client.socket.write(HANDSHAKE.replace('echo-protocol', 'h2c, echo-protocol') + 'early');
    await waitFor(client, /EARLY$/);

    assert.match(client.text(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.equal(upgradeOffered, 'echo-protocol');
    client.socket.destroy();
  });

  it('returns 502 for a 101 to an unoffered protocol', async () => {
    for (const path of ['/ws/other', '/ws/bare']) {
      const response = await sendRaw(proxy.port, HANDSHAKE.replace('/ws/chat', path));

      assert.match(response, /^HTTP\/1\.1 502 Bad Gateway\r\n/, path);
      assert.match(response, /"error":"upstream_error"/, path);
    }
    const logged = proxy.logs.filter((line) => line.msg === 'upstream upgrade failed');
    assert.ok(logged.length > 0, 'no upstream upgrade failed line');
    assert.equal(logged[0].code, 'LOOM_UPSTREAM_UPGRADE');
    assert.match(String(logged[0].error), /switched to the protocol "other-protocol"/);
    assert.equal(logged[0].err, undefined);
  });

  it('sends a Content-Length body before the switch', async () => {
    const client = openClient();
    client.socket.write(
      'POST /ws/body HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\n' +
        'Upgrade: echo-protocol\r\nContent-Length: 4\r\n\r\nbodyafter',
    );
    await waitFor(client, /AFTER$/);

    assert.match(client.text(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(client.text(), /\r\nx-body: body\r\n/i);
    client.socket.destroy();
  });
});
