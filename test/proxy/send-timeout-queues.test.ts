import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import {
  eventually,
  pausedClient,
  startHttpServer,
  startProxy,
  streamBody,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Send timeout of the proxy under test, in milliseconds. */
const SEND_TIMEOUT_MS = 300;
/** Maximum wait for a cut, in milliseconds: ten send timeouts. */
const CUT_BOUND_MS = 10 * SEND_TIMEOUT_MS;
/** Body size of `/big`: far more than the socket buffers hold. */
const BIG_BYTES = 32 * 1024 * 1024;
/** Piece size of `/fill`, below the 16 KiB high-water mark of the client connection. */
const FILL_PIECE = Buffer.alloc(12 * 1024, 'f');

/** Paths of the upstream responses that closed before they finished. */
const cutResponses: string[] = [];
/** Paths of the upstream responses that finished. */
const finishedResponses: string[] = [];

/** Writes 1 KiB every 100 ms for ten send timeouts, then ends the response. */
async function trickle(res: ServerResponse): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/plain' });
  for (let i = 0; i < CUT_BOUND_MS / 100 && !res.destroyed; i++) {
    res.write(Buffer.alloc(1024, 't'));
    await sleep(100);
  }
  res.end();
}

/** Returns the number of connections open on the proxy's server. */
async function proxyConnections(proxy: ProxyFixture): Promise<number> {
  return new Promise((resolve, reject) =>
    proxy.server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
  );
}

describe('send timeout with queued responses', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  let target: UpstreamTarget;
  /** Server side of the latest client connection of the proxy. */
  let clientConnection: Socket | undefined;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      const path = req.url ?? '';
      res.once('close', () => {
        (res.writableFinished ? finishedResponses : cutResponses).push(path);
      });
      req.resume();
      req.once('end', () => {
        if (path === '/fill') {
          void fillClientBuffer(res);
          return;
        }
        if (path === '/trickle') {
          void trickle(res);
          return;
        }
        res.writeHead(200, { 'content-length': String(BIG_BYTES) });
        streamBody(res, BIG_BYTES);
      });
    });
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.server.on('connection', (socket: Socket) => (clientConnection = socket));
    const table = proxy.publish(
      [{ name: 'app', path: '/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
    const match = table.router.find('GET', undefined, '/big');
    assert.equal(match.kind, 'found');
    target = match.value.balancer!.targets[0];
  });

  /**
   * Writes 12 KiB pieces until the proxy's client connection has unsent bytes, then ends the
   * response. The proxy's last write to the client then returns true, so it never waits for
   * 'drain', and its response ends with bytes the client has not taken.
   */
  async function fillClientBuffer(res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 20_000 && !res.destroyed; i++) {
      res.write(FILL_PIECE);
      await sleep(5);
      if ((clientConnection?.writableLength ?? 0) > 0) break;
    }
    res.end();
  }

  beforeEach(() => {
    cutResponses.length = 0;
    finishedResponses.length = 0;
    clientConnection = undefined;
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  for (const [name, queued] of [
    ['plain', 'GET /big HTTP/1.1\r\nHost: a\r\n\r\n'],
    [
      '100-continue',
      'POST /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n',
    ],
  ] as const) {
    it(`cuts a queue behind unsent bytes, ${name}`, async () => {
      const { socket, closed } = await pausedClient(proxy.port);
      socket.write('GET /fill HTTP/1.1\r\nHost: a\r\n\r\n' + queued);
      assert.ok(
        await eventually(() => finishedResponses.includes('/fill'), 20_000),
        'the upstream never finished /fill',
      );
      const unsent = clientConnection?.writableLength ?? 0;
      assert.ok(unsent > 0, 'the client connection has no unsent bytes');
      assert.ok(unsent < 16 * 1024, `unsent bytes: ${unsent}`);

      // The client reads nothing, so the proxy must cut it off and abort /big upstream.
      const cut = await eventually(() => cutResponses.includes('/big'), CUT_BOUND_MS);
      const active = target.state.active;
      const connections = await proxyConnections(proxy);
      socket.destroy();
      await within(closed, 'the client to close');
      // Lets the next test start clean when the proxy kept /big running.
      await eventually(() => cutResponses.includes('/big') && target.state.active === 0);
      assert.ok(cut, `/big upstream still running after ${CUT_BOUND_MS} ms`);
      assert.equal(active, 0, 'requests in flight to the target after the wait');
      assert.equal(connections, 0, 'client connections open on the proxy after the wait');
    });
  }

  it('cuts a client leaving the last bytes', async () => {
    const { socket, closed } = await pausedClient(proxy.port);
    socket.write('GET /fill HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.ok(
      await eventually(() => finishedResponses.includes('/fill'), 20_000),
      'the upstream never finished /fill',
    );
    const unsent = clientConnection?.writableLength ?? 0;
    assert.ok(unsent > 0, 'the client connection has no unsent bytes');
    assert.ok(unsent < 16 * 1024, `unsent bytes: ${unsent}`);

    // The proxy still has bytes to send, and the client takes none of them.
    const cut = await eventually(() => clientConnection?.destroyed === true, CUT_BOUND_MS);
    socket.destroy();
    await within(closed, 'the client to close');
    assert.ok(cut, `the proxy kept the connection open for ${CUT_BOUND_MS} ms`);
  });

  it('keeps responses queued behind a slow upstream', async () => {
    const { socket, closed } = await pausedClient(proxy.port);
    let received = 0;
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    socket.resume();
    socket.write(
      'GET /trickle HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /big HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /big2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    await within(closed, 'the three responses', CUT_BOUND_MS + 10_000);

    assert.deepEqual(cutResponses, []);
    assert.deepEqual([...finishedResponses].sort(), ['/big', '/big2', '/trickle']);
    assert.ok(received > 2 * BIG_BYTES, `got ${received} bytes`);
  });

  it('aborts the queued request of a cut client', async () => {
    const { socket, closed } = await pausedClient(proxy.port);
    socket.write(
      'GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /big2 HTTP/1.1\r\nHost: a\r\n\r\n' +
        'POST /big3 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n',
    );
    assert.ok(
      await eventually(() => cutResponses.length === 3, CUT_BOUND_MS),
      `upstream responses cut: ${cutResponses.join(', ')}`,
    );
    assert.deepEqual([...cutResponses].sort(), ['/big', '/big2', '/big3']);
    assert.ok(await eventually(() => target.state.active === 0), 'target still busy');
    assert.ok(
      await eventually(() => clientConnection?.destroyed === true),
      'client connection open',
    );
    assert.equal(await proxyConnections(proxy), 0);
    socket.resume();
    await within(closed, 'the client to see the closed connection');
  });

  it('aborts a cut 100-continue request', async () => {
    const { socket, closed } = await pausedClient(proxy.port);
    socket.write(
      'POST /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello',
    );
    assert.ok(
      await eventually(() => cutResponses.includes('/big'), CUT_BOUND_MS),
      'upstream response still running',
    );
    assert.ok(await eventually(() => target.state.active === 0), 'target still busy');
    assert.equal(await proxyConnections(proxy), 0);
    socket.resume();
    await within(closed, 'the client to see the closed connection');
  });
});
