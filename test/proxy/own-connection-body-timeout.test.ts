// Requests with Expect: 100-continue and upgrade handshakes go out on connections of the
// proxy's own, outside undici's pool and its body timeout. These tests check that an idle
// response body still ends there, and that a slow client alone does not end it.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  openRawClient,
  startHttpServer,
  startProxy,
  streamBody,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

const BIG_BODY_BYTES = 8 * 1024 * 1024;

/** Sends a POST with `Expect: 100-continue` and a 2-byte body once the proxy sends 100 Continue. */
async function continueRequest(port: number, path: string): Promise<IncomingMessage> {
  const upload = httpRequest({
    host: '127.0.0.1',
    port,
    path,
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
  return response;
}

/** Reads `response` to its end and resolves with `complete` or, when it is cut, `cut`. */
function outcomeOf(response: IncomingMessage): Promise<'complete' | 'cut'> {
  return new Promise((resolve) => {
    response.on('error', () => resolve('cut'));
    response.on('aborted', () => resolve('cut'));
    response.on('end', () => resolve('complete'));
    response.on('close', () => resolve(response.complete ? 'complete' : 'cut'));
    response.resume();
  });
}

describe('body timeout on own connections', () => {
  let stalled: RunningServer;
  let big: RunningServer;
  let proxy: ProxyFixture;
  let defaultProxy: ProxyFixture;

  before(async () => {
    // Sends the head and 7 of 100 bytes, then stays silent with the connection open.
    stalled = await startHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
    });
    big = await startHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-length': String(BIG_BODY_BYTES) });
      streamBody(res, BIG_BODY_BYTES);
    });
    const upstreams = [upstreamAt('stalled', stalled.port), upstreamAt('big', big.port)];
    const timeouts = { connectMs: 0, responseHeaderMs: 0, idleBodyMs: 200 };

    proxy = await startProxy();
    proxy.publish(
      [
        { name: 'stall', path: '/stall', upstream: 'stalled', timeouts },
        { name: 'ws-stall', path: '/ws/stall', upstream: 'stalled', timeouts },
        { name: 'big', path: '/big', upstream: 'big', timeouts },
      ],
      upstreams,
    );
    // No route timeout here, so the proxy's default body timeout applies.
    defaultProxy = await startProxy({}, { upstreamBodyTimeoutMs: 200 });
    defaultProxy.publish([{ name: 'stall', path: '/stall', upstream: 'stalled' }], upstreams);
  });

  after(async () => {
    await proxy.close();
    await defaultProxy.close();
    await stalled.close();
    await big.close();
  });

  it('cuts a stalled 100-continue body', async () => {
    const response = await continueRequest(proxy.port, '/stall');

    assert.equal(response.statusCode, 200);
    assert.equal(await within(outcomeOf(response), 'the stalled body to be cut'), 'cut');
  });

  it('applies the proxy default without a route timeout', async () => {
    const response = await continueRequest(defaultProxy.port, '/stall');

    assert.equal(response.statusCode, 200);
    assert.equal(await within(outcomeOf(response), 'the stalled body to be cut'), 'cut');
  });

  it('keeps a paused 100-continue reader', async () => {
    const response = await continueRequest(proxy.port, '/big');
    response.pause();
    // The client reads nothing for three body timeouts while the upstream has more to send.
    await sleep(600);
    let received = 0;
    response.on('data', (chunk: Buffer) => (received += chunk.length));

    assert.equal(await within(outcomeOf(response), 'the whole body'), 'complete');
    assert.equal(received, BIG_BODY_BYTES);
  });

  it('cuts a stalled body of a refused upgrade', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /ws/stall HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    await within(client.closed, 'the stalled body to be cut');

    assert.match(client.text(), /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(client.text(), /\r\n\r\npartial$/);
  });
});
