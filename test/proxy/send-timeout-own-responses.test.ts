import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  eventually,
  listenNet,
  pausedClient,
  startHttpServer,
  startProxy,
  upstreamAt,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Send timeout of the proxy under test, in milliseconds. */
const SEND_TIMEOUT_MS = 300;
/** Maximum wait for a cut once the client connection has unsent bytes: ten send timeouts. */
const CUT_BOUND_MS = 10 * SEND_TIMEOUT_MS;
/** Body of the upstream's responses: 4 KiB, so that a few thousand fill the socket buffers. */
const UPSTREAM_BODY = 'u'.repeat(4096);

describe('send timeout on responses the proxy writes', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  /** Server side of the latest client connection of the proxy. */
  let clientConnection: Socket | undefined;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      req.resume();
      req.once('end', () => res.end(UPSTREAM_BODY));
    });
    // A port that refuses connections: listened on once, then closed.
    const probe = createServer();
    const deadPort = await listenNet(probe);
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.server.on('connection', (socket: Socket) => (clientConnection = socket));
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
      const { socket, closed } = await pausedClient(proxy.port);
      socket.write(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`.repeat(requests));
      const filled = await eventually(
        () => (clientConnection?.writableLength ?? 0) > 0 || clientConnection?.destroyed === true,
        20_000,
      );
      const cut = await eventually(() => clientConnection?.destroyed === true, CUT_BOUND_MS);
      const unsent = clientConnection?.writableLength;
      socket.destroy();
      await closed;
      assert.ok(filled, 'the client connection never had unsent bytes');
      assert.ok(cut, `connection open after ${CUT_BOUND_MS} ms with ${unsent} unsent bytes`);
    });
  }
});
