import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Delay of the upstream's response to `/app/slow`, in milliseconds. */
const SLOW_MS = 300;
/** Body size of the upstream's response to `/app/big`, far larger than the socket buffers. */
const BIG_BYTES = 64 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'a');

const SLOW = 'GET /app/slow HTTP/1.1\r\nHost: a\r\n\r\n';
const BIG = 'GET /app/big HTTP/1.1\r\nHost: a\r\n\r\n';
const UPGRADE =
  'GET /app/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
  'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

/** Writes `parts` on a new connection, `pauseMs` apart, and returns what arrives in `waitMs`. */
async function collect(port: number, parts: string[], pauseMs: number, waitMs: number) {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {
    // A reset still counts as a close; the tests check what arrived.
  });
  let closed = false;
  socket.once('close', () => (closed = true));
  for (const part of parts) {
    socket.write(part);
    await sleep(pauseMs);
  }
  await sleep(waitMs);
  socket.destroy();
  const text = Buffer.concat(chunks).toString('latin1');
  const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
  return { text, statuses, closed };
}

describe('queued pipelined responses', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  /** Upstream responses to `/app/big` that closed before they finished. */
  let abortedBig = 0;
  /** Upstream responses to `/app/big` that started. */
  let startedBig = 0;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      req.resume();
      if (req.url === '/app/big') {
        startedBig++;
        res.on('close', () => {
          if (!res.writableFinished) abortedBig++;
        });
        let sent = 0;
        const pump = (): void => {
          while (sent < BIG_BYTES && !res.destroyed) {
            sent += CHUNK.length;
            if (!res.write(CHUNK)) return void res.once('drain', pump);
          }
          if (!res.destroyed) res.end();
        };
        pump();
        return;
      }
      const delay = req.url === '/app/slow' ? SLOW_MS : 0;
      setTimeout(() => res.end(`ok ${req.url}`), delay);
    });
    upstream.server.on('upgrade', (_req, socket) => {
      socket.on('error', () => {});
      // The server allows half-open connections, so the tunnel's end gets an end in return.
      socket.on('end', () => socket.end());
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      );
    });
    proxy = await startProxy();
    proxy.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('upgrade waits for queued responses', async () => {
    const result = await collect(proxy.port, [SLOW + UPGRADE], 0, SLOW_MS + 300);

    // The 101 switches the connection to the tunnel, so a 200 after it lands inside the tunnel.
    assert.deepEqual(result.statuses, [200, 101]);
  });

  // NOTE: a parse error in the body of a request being forwarded destroys the connection, as
  // Node.js does by default, so a complete earlier request behind it loses its response too.
  it(
    'body error keeps earlier responses',
    {
      todo: 'a body parse error destroys the connection with its queued responses',
    },
    async () => {
      const post =
        'POST /app/post HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n';
      const result = await collect(proxy.port, [SLOW + post, 'ZZZ\r\n\r\n'], 100, SLOW_MS + 300);

      // The first request was complete and valid before the second one's body failed to parse.
      assert.equal(result.statuses[0], 200);
      assert.equal(result.closed, true);
    },
  );

  it('client close aborts queued upstream responses', async () => {
    startedBig = 0;
    abortedBig = 0;
    const socket = connect(proxy.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.pause();
    await once(socket, 'connect');
    socket.write(BIG.repeat(4));
    await within(
      (async () => {
        while (startedBig < 4) await sleep(20);
      })(),
      'four upstream requests',
    );
    await sleep(200);
    socket.destroy();

    await sleep(2_000);
    assert.equal(abortedBig, 4, 'upstream responses still held after the client closed');
  });
});
