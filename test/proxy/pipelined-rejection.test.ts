import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_REQUESTS_AFTER_REJECTION } from '../../data-plane/proxy/pipelining.js';
import {
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Default delay of the upstream's response to `/app/slow`, in milliseconds. */
const SLOW_MS = 200;
/** Body size of the upstream's response to `/app/big`, larger than the socket buffers. */
const BIG_BYTES = 4 * 1024 * 1024;

const VALID = 'GET /app/one HTTP/1.1\r\nHost: a\r\n\r\n';
const SLOW = 'GET /app/slow HTTP/1.1\r\nHost: a\r\n\r\n';
const AFTER = 'GET /app/after HTTP/1.1\r\nHost: a\r\n\r\n';

/**
 * Requests that get 400 and `Connection: close`. The proxy rejects the first three. Node.js
 * fails to parse the rest: a bare LF, and Content-Length with Transfer-Encoding.
 */
const REJECTED: Array<[string, string]> = [
  ['two Host headers', 'GET /app/two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
  ['no Host header', 'GET /app/two HTTP/1.1\r\n\r\n'],
  [
    'Transfer-Encoding in HTTP/1.0',
    'POST /app/two HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  ],
  ['a bare LF', 'GET /app/two HTTP/1.1\nHost: a\n\n'],
  [
    'Content-Length with Transfer-Encoding',
    'POST /app/two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  ],
];

const DUPLICATE_HOST = REJECTED[0][1];

/** What a raw client received before the proxy closed its connection. */
interface Exchange {
  text: string;
  /** Status codes of the responses, in order. */
  statuses: number[];
  /** Milliseconds from the write to the close. */
  elapsedMs: number;
}

/**
 * Writes `text` on a new connection and collects every byte until the proxy closes it. The
 * client never half-closes, so only the proxy can end the connection.
 */
async function exchange(port: number, text: string): Promise<Exchange> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {
    // A reset after the responses still counts as a close; the tests check what arrived.
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const start = performance.now();
  socket.write(text);
  await within(closed, 'the proxy to close the connection');
  const received = Buffer.concat(chunks).toString('latin1');
  const statuses = [...received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
  return { text: received, statuses, elapsedMs: performance.now() - start };
}

/** Returns the head of the response with `status` in `text`. */
function headOf(text: string, status: number): string {
  const start = text.indexOf(`HTTP/1.1 ${status} `);
  assert.notEqual(start, -1, `no ${status} response`);
  return text.slice(start, text.indexOf('\r\n\r\n', start)).toLowerCase();
}

describe('proxy pipelining after a rejected request', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  /** Paths of the requests the upstream received. */
  const forwarded: string[] = [];
  /** Pending delayed upstream responses, cleared when the suite ends. */
  const timers = new Set<NodeJS.Timeout>();

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      forwarded.push(req.url ?? '');
      const url = new URL(req.url ?? '/', 'http://upstream');
      const delay =
        url.pathname === '/app/slow' ? Number(url.searchParams.get('ms') ?? SLOW_MS) : 0;
      req.resume();
      const timer = setTimeout(() => {
        timers.delete(timer);
        res.end(url.pathname === '/app/big' ? Buffer.alloc(BIG_BYTES, 'a') : `ok ${req.url}`);
      }, delay);
      timers.add(timer);
    });
    proxy = await startProxy();
    proxy.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  beforeEach(() => {
    forwarded.length = 0;
  });

  after(async () => {
    for (const timer of timers) clearTimeout(timer);
    await proxy.close();
    await upstream.close();
  });

  /** Waits long enough for a forwarded request to reach the upstream, then returns the paths. */
  async function forwardedPaths(): Promise<string[]> {
    await sleep(50);
    return [...forwarded];
  }

  for (const [name, rejected] of REJECTED) {
    it(`valid, rejected, valid: ${name}`, async () => {
      const result = await exchange(proxy.port, VALID + rejected + AFTER);

      assert.deepEqual(result.statuses, [200, 400]);
      assert.match(result.text, /ok \/app\/one/);
      assert.match(headOf(result.text, 400), /\r\nconnection: close(\r\n|$)/);
      assert.deepEqual(await forwardedPaths(), ['/app/one']);
    });

    it(`slow, rejected, valid: ${name}`, async () => {
      const result = await exchange(proxy.port, SLOW + rejected + AFTER);

      assert.deepEqual(result.statuses, [200, 400]);
      assert.match(result.text, /ok \/app\/slow/);
      assert.match(headOf(result.text, 400), /\r\nconnection: close(\r\n|$)/);
      assert.deepEqual(await forwardedPaths(), ['/app/slow']);
    });
  }

  it('slow response before rejection', async () => {
    const result = await exchange(proxy.port, SLOW + DUPLICATE_HOST + AFTER);

    assert.deepEqual(result.statuses, [200, 400]);
    assert.match(result.text, /ok \/app\/slow/);
    assert.match(headOf(result.text, 400), /\r\nconnection: close(\r\n|$)/);
    assert.ok(result.elapsedMs >= SLOW_MS - 20, `closed after ${result.elapsedMs} ms`);
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('rejected then valid', async () => {
    const result = await exchange(proxy.port, DUPLICATE_HOST + AFTER);

    assert.deepEqual(result.statuses, [400]);
    assert.match(headOf(result.text, 400), /\r\nconnection: close(\r\n|$)/);
    assert.deepEqual(await forwardedPaths(), []);
  });

  it('valid then rejected', async () => {
    const result = await exchange(proxy.port, VALID + DUPLICATE_HOST);

    assert.deepEqual(result.statuses, [200, 400]);
    assert.match(headOf(result.text, 400), /\r\nconnection: close(\r\n|$)/);
    assert.deepEqual(await forwardedPaths(), ['/app/one']);
  });

  it('417 stays in order', async () => {
    const expectation = 'GET /app/x HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n';
    const result = await exchange(proxy.port, SLOW + expectation + DUPLICATE_HOST + AFTER);

    assert.deepEqual(result.statuses, [200, 417, 400]);
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('upgrade after rejection', async () => {
    const upgrade =
      'GET /app/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n';
    const result = await exchange(proxy.port, SLOW + DUPLICATE_HOST + upgrade);

    assert.deepEqual(result.statuses, [200, 400]);
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('upgrade after large response', async () => {
    const upgrade =
      'GET /app/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n';
    const result = await exchange(
      proxy.port,
      'GET /app/big HTTP/1.1\r\nHost: a\r\n\r\n' + DUPLICATE_HOST + upgrade,
    );

    assert.deepEqual(result.statuses, [200, 400]);
    assert.match(headOf(result.text, 200), new RegExp(`\r\ncontent-length: ${BIG_BYTES}\r\n`));
    const bodyStart = result.text.indexOf('\r\n\r\n') + 4;
    assert.equal(result.text.indexOf('HTTP/1.1 400 '), bodyStart + BIG_BYTES);
    assert.deepEqual(await forwardedPaths(), ['/app/big']);
  });

  it('CONNECT after rejection', async () => {
    const result = await exchange(
      proxy.port,
      SLOW + DUPLICATE_HOST + 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n',
    );

    assert.deepEqual(result.statuses, [200, 400]);
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('long tail after rejection', async () => {
    let parsed = 0;
    const countRequest = (): void => {
      parsed++;
    };
    proxy.server.on('request', countRequest);
    try {
      // About 700 KB of requests, far more than one read of the socket returns.
      const tail = AFTER.repeat(20_000);
      const result = await exchange(proxy.port, SLOW + DUPLICATE_HOST + tail);

      assert.deepEqual(result.statuses, [200, 400]);
      assert.deepEqual(await forwardedPaths(), ['/app/slow']);
      assert.ok(parsed < MAX_REQUESTS_AFTER_REJECTION, `${parsed} requests parsed`);
    } finally {
      proxy.server.off('request', countRequest);
    }
  });

  it('tail past limit destroys connection', async () => {
    // Resuming the proxy's side of the connection replaces whatever makes Node.js read
    // again after the rejection, so the tail grows past the limit.
    const serverSockets: Socket[] = [];
    const keep = (socket: Socket): void => {
      serverSockets.push(socket);
    };
    proxy.server.on('connection', keep);
    const socket = connect(proxy.port, '127.0.0.1');
    socket.on('error', () => {
      // The proxy resets the connection; the test checks that it closed.
    });
    socket.resume();
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    try {
      socket.write('GET /app/slow?ms=3000 HTTP/1.1\r\nHost: a\r\n\r\n' + DUPLICATE_HOST);
      const piece = AFTER.repeat(500);
      for (let i = 0; i < 100 && !socket.destroyed; i++) {
        socket.write(piece);
        await sleep(5);
        for (const serverSocket of serverSockets) serverSocket.resume();
      }
      await within(closed, 'the proxy to close the connection', 1_500);
    } finally {
      proxy.server.off('connection', keep);
      socket.destroy();
    }

    assert.deepEqual(await forwardedPaths(), ['/app/slow?ms=3000']);
    assert.ok(
      proxy.logs.some((line) => line.msg.startsWith('client connection destroyed: too many')),
      'no log line about the destroyed connection',
    );
  });
});
