import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  eventually,
  pausedClient,
  startHttpServer,
  startProxy,
  upstreamAt,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Send timeout of the proxy under test, in milliseconds. */
const SEND_TIMEOUT_MS = 300;
/** Maximum wait for a cut, in milliseconds: ten send timeouts. */
const CUT_BOUND_MS = 10 * SEND_TIMEOUT_MS;
/** Piece size of `/fill`, below the 16 KiB high-water mark of the client connection. */
const FILL_PIECE = Buffer.alloc(12 * 1024, 'f');

describe('send timeout after an invalid request body', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  /** Server side of the latest client connection of the proxy. */
  let clientConnection: Socket | undefined;
  let fillFinished = false;

  /**
   * Writes 12 KiB pieces until the proxy's client connection has unsent bytes, then ends the
   * response, without reading the request body.
   */
  async function fillClientBuffer(res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 20_000 && !res.destroyed; i++) {
      res.write(FILL_PIECE);
      await sleep(5);
      if ((clientConnection?.writableLength ?? 0) > 0) break;
    }
    res.end();
    res.once('finish', () => (fillFinished = true));
  }

  before(async () => {
    upstream = await startHttpServer((_req, res) => void fillClientBuffer(res));
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.server.on('connection', (socket: Socket) => (clientConnection = socket));
    proxy.publish(
      [{ name: 'app', path: '/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  // The control case keeps its upload open, and the other sends an invalid chunk size after the
  // response ended.
  for (const [name, tail] of [
    ['an open upload', ''],
    ['a bad chunk', 'zz\r\n'],
  ] as const) {
    it(`cuts a client that reads nothing after ${name}`, async () => {
      fillFinished = false;
      const { socket, closed } = await pausedClient(proxy.port);
      socket.write(
        'POST /fill HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
      );
      assert.ok(await eventually(() => fillFinished, 20_000), 'the upstream never finished /fill');
      const unsent = clientConnection?.writableLength ?? 0;
      assert.ok(unsent > 0, 'the client connection has no unsent bytes');

      if (tail !== '') socket.write(tail);
      const cut = await eventually(() => clientConnection?.destroyed === true, CUT_BOUND_MS);
      const left = clientConnection?.writableLength;
      socket.destroy();
      await closed;
      assert.ok(cut, `connection open after ${CUT_BOUND_MS} ms with ${left} unsent bytes`);
    });
  }
});
