import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';

import { startHttpServer, startProxy, upstreamAt, within } from './harness.js';

describe('proxy Expect 100-continue body timeout', () => {
  it('cuts a stalled body', async () => {
    // Sends the head and part of the body, then stays silent with the connection open.
    const stalled = await startHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
    });
    const proxy = await startProxy();
    try {
      proxy.publish(
        [
          {
            name: 'stall',
            path: '/stall',
            upstream: 'stalled',
            timeouts: { connectMs: 0, responseHeaderMs: 0, idleBodyMs: 200 },
          },
        ],
        [upstreamAt('stalled', stalled.port)],
      );

      const upload = httpRequest({
        host: '127.0.0.1',
        port: proxy.port,
        path: '/stall',
        method: 'POST',
        headers: { expect: '100-continue', 'content-length': '2' },
        agent: false,
      });
      upload.on('continue', () => upload.end('hi'));
      upload.on('error', () => {});
      upload.flushHeaders();
      const [response] = (await within(once(upload, 'response'), 'the response head')) as [
        IncomingMessage,
      ];
      assert.equal(response.statusCode, 200);

      // The route's idleBodyMs is 200 ms, so the proxy must cut the response well within the
      // harness wait instead of leaving the client waiting for the 93 missing bytes.
      const outcome = new Promise<string>((resolveOutcome) => {
        response.on('error', () => resolveOutcome('cut'));
        response.on('aborted', () => resolveOutcome('cut'));
        response.on('end', () => resolveOutcome('complete'));
        response.on('close', () => resolveOutcome(response.complete ? 'complete' : 'cut'));
        response.resume();
      });
      assert.equal(await within(outcome, 'the stalled body to be cut'), 'cut');
    } finally {
      await proxy.close();
      await stalled.close();
    }
  });
});
