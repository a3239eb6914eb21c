import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  CUT_BOUND_MS,
  fillClientBuffer,
  pausedClient,
  ResponseRecorder,
  SEND_TIMEOUT_MS,
  startHttpServer,
  startProxy,
  waitForCut,
  waitForFill,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

describe('send timeout after an invalid request body', () => {
  const responses = new ResponseRecorder();
  let upstream: RunningServer;
  let proxy: ProxyFixture;

  before(async () => {
    upstream = await startHttpServer(
      responses.wrap((_req, res) => void fillClientBuffer(res, () => proxy.latestConnection())),
    );
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.publishOne('app', upstream.port);
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
      responses.clear();
      const client = await pausedClient(proxy.port);
      client.socket.write(
        'POST /fill HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
      );
      await waitForFill(proxy, responses);

      if (tail !== '') client.socket.write(tail);
      const { cut, unsent } = await waitForCut(proxy, client);
      assert.ok(cut, `connection open after ${CUT_BOUND_MS} ms with ${unsent} unsent bytes`);
    });
  }
});
