import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import {
  CUT_BOUND_MS,
  eventually,
  fillClientBuffer,
  pausedClient,
  ResponseRecorder,
  SEND_TIMEOUT_MS,
  startHttpServer,
  startProxy,
  streamBody,
  waitForCut,
  waitForFill,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Body size of `/big`: far more than the socket buffers hold. */
const BIG_BYTES = 32 * 1024 * 1024;
/** Paths of the upstream's responses, by how they ended. */
const responses = new ResponseRecorder();

/** Writes 1 KiB every 100 ms for ten send timeouts, then ends the response. */
async function trickle(res: ServerResponse): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/plain' });
  for (let i = 0; i < CUT_BOUND_MS / 100 && !res.destroyed; i++) {
    res.write(Buffer.alloc(1024, 't'));
    await sleep(100);
  }
  res.end();
}

describe('send timeout with queued responses', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  let target: UpstreamTarget;

  before(async () => {
    upstream = await startHttpServer(
      responses.wrap((req, res) => {
        req.resume();
        req.once('end', () => {
          if (req.url === '/fill') {
            void fillClientBuffer(res, () => proxy.latestConnection());
            return;
          }
          if (req.url === '/trickle') {
            void trickle(res);
            return;
          }
          res.writeHead(200, { 'content-length': String(BIG_BYTES) });
          streamBody(res, BIG_BYTES);
        });
      }),
    );
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    target = proxy.publishOne('app', upstream.port);
  });

  beforeEach(() => {
    responses.clear();
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
      const unsent = await waitForFill(proxy, responses);
      assert.ok(unsent < 16 * 1024, `unsent bytes: ${unsent}`);

      // The client reads nothing, so the proxy must cut it off and abort /big upstream.
      const cut = await eventually(() => responses.cut.includes('/big'), CUT_BOUND_MS);
      const active = target.state.active;
      const connections = await proxy.connectionCount();
      socket.destroy();
      await within(closed, 'the client to close');
      // Lets the next test start clean when the proxy kept /big running.
      await eventually(() => responses.cut.includes('/big') && target.state.active === 0);
      assert.ok(cut, `/big upstream still running after ${CUT_BOUND_MS} ms`);
      assert.equal(active, 0, 'requests in flight to the target after the wait');
      assert.equal(connections, 0, 'client connections open on the proxy after the wait');
    });
  }

  it('cuts a client leaving the last bytes', async () => {
    const client = await pausedClient(proxy.port);
    client.socket.write('GET /fill HTTP/1.1\r\nHost: a\r\n\r\n');
    const unsent = await waitForFill(proxy, responses);
    assert.ok(unsent < 16 * 1024, `unsent bytes: ${unsent}`);

    // The proxy still has bytes to send, and the client takes none of them.
    const { cut } = await waitForCut(proxy, client);
    assert.ok(cut, `the proxy kept the connection open for ${CUT_BOUND_MS} ms`);
  });

  it('keeps responses queued behind a slow upstream', async () => {
    const { socket, closed, received } = await pausedClient(proxy.port);
    socket.resume();
    socket.write(
      'GET /trickle HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /big HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /big2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    await within(closed, 'the three responses', CUT_BOUND_MS + 10_000);

    assert.deepEqual(responses.cut, []);
    assert.deepEqual([...responses.finished].sort(), ['/big', '/big2', '/trickle']);
    assert.ok(received().length > 2 * BIG_BYTES, `got ${received().length} bytes`);
  });

  it('aborts the queued request of a cut client', async () => {
    const { socket, closed } = await pausedClient(proxy.port);
    socket.write(
      'GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /big2 HTTP/1.1\r\nHost: a\r\n\r\n' +
        'POST /big3 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n',
    );
    assert.ok(
      await eventually(() => responses.cut.length === 3, CUT_BOUND_MS),
      `upstream responses cut: ${responses.cut.join(', ')}`,
    );
    assert.deepEqual([...responses.cut].sort(), ['/big', '/big2', '/big3']);
    assert.ok(await eventually(() => target.state.active === 0), 'target still busy');
    assert.ok(
      await eventually(() => proxy.latestConnection()?.destroyed === true),
      'client connection open',
    );
    assert.equal(await proxy.connectionCount(), 0);
    socket.resume();
    await within(closed, 'the client to see the closed connection');
  });

  it('aborts a cut 100-continue request', async () => {
    const { socket, closed } = await pausedClient(proxy.port);
    socket.write(
      'POST /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello',
    );
    assert.ok(
      await eventually(() => responses.cut.includes('/big'), CUT_BOUND_MS),
      'upstream response still running',
    );
    assert.ok(await eventually(() => target.state.active === 0), 'target still busy');
    assert.equal(await proxy.connectionCount(), 0);
    socket.resume();
    await within(closed, 'the client to see the closed connection');
  });
});
