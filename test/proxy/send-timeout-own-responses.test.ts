import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  closedPort,
  CUT_BOUND_MS,
  eventually,
  pausedClient,
  SEND_TIMEOUT_MS,
  startHttpServer,
  startProxy,
  upstreamAt,
  waitForCut,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Body of the upstream's responses: 4 KiB, so that a few thousand fill the socket buffers. */
const UPSTREAM_BODY = 'u'.repeat(4096);

describe('send timeout on responses the proxy writes', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      req.resume();
      req.once('end', () => res.end(UPSTREAM_BODY));
    });
    const deadPort = await closedPort();

    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.publish(
      [
        { name: 'app', path: '/app/*', upstream: 'app' },
        { name: 'dead', path: '/dead/*', upstream: 'dead' },
      ],
      [upstreamAt('app', upstream.port), upstreamAt('dead', deadPort)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  // The counts of pipelined requests make responses of about 12 MiB, far more than the socket
  // buffers hold.
  for (const [name, path, requests] of [
    ['upstream 200 responses', '/app/x', 3_000],
    ['404 responses', '/nowhere', 60_000],
    ['502 responses', '/dead/x', 60_000],
  ] as const) {
    it(`cuts a pipelining client that reads no ${name}`, async () => {
      const client = await pausedClient(proxy.port);
      client.socket.write(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`.repeat(requests));
      const filled = await eventually(() => {
        const connection = proxy.latestConnection();
        return (connection?.writableLength ?? 0) > 0 || connection?.destroyed === true;
      }, 20_000);
      const { cut, unsent } = await waitForCut(proxy, client);
      assert.ok(filled, 'the client connection never had unsent bytes');
      assert.ok(cut, `connection open after ${CUT_BOUND_MS} ms with ${unsent} unsent bytes`);
    });
  }
});
