import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  eventually,
  openRawClient,
  send,
  startHttpServer,
  startProxy,
  upstreamAt,
  waitForText,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Send timeout of the proxy under test, in milliseconds. */
const SEND_TIMEOUT_MS = 200;

describe('client aborts and slow upstreams', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  const upstreamClosed = new Map<string, boolean>();

  before(async () => {
    upstream = await startHttpServer((req: IncomingMessage, res: ServerResponse) => {
      const path = req.url ?? '';
      upstreamClosed.set(path, false);
      res.on('close', () => upstreamClosed.set(path, !res.writableFinished));
      if (path.startsWith('/slow')) {
        const timer = setTimeout(() => res.end('late'), 1_500);
        res.on('close', () => clearTimeout(timer));
      } else if (path.startsWith('/events')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const timer = setInterval(() => res.write('data: tick\n\n'), 300);
        res.on('close', () => clearInterval(timer));
      } else {
        res.end('ok');
      }
    });
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS, keepAliveTimeoutMs: 5_000 });
    proxy.publish([{ name: 'all', path: '/*', upstream: 'up' }], [upstreamAt('up', upstream.port)]);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('cancels the upstream when the client aborts', async () => {
    const client = openRawClient(proxy.port, 'GET /slow/abort HTTP/1.1\r\nHost: a.test\r\n\r\n');
    assert.ok(await eventually(() => upstreamClosed.has('/slow/abort')));
    await sleep(300);
    client.socket.destroy();
    assert.ok(await eventually(() => upstreamClosed.get('/slow/abort') === true, 1_000));
  });

  it('cancels an event stream when the client leaves', async () => {
    const client = openRawClient(proxy.port, 'GET /events/x HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await waitForText(client.text, /data: tick/);
    client.socket.destroy();
    assert.ok(await eventually(() => upstreamClosed.get('/events/x') === true, 1_000));
  });

  it('waits for a slow upstream past the send timeout', async () => {
    const response = await within(send(proxy.port, '/slow/wait'), 'the long poll');
    assert.equal(response.status, 200);
    assert.equal(response.body.toString(), 'late');
  });

  it('keeps an event stream that pauses longer than the send timeout', async () => {
    const client = openRawClient(proxy.port, 'GET /events/keep HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await sleep(1_500);
    assert.equal(client.error(), undefined);
    assert.equal(client.socket.destroyed, false);
    assert.ok((client.text().match(/data: tick/g) ?? []).length >= 3, client.text());
    client.socket.destroy();
  });

  it('keeps an idle keep-alive connection between requests', async () => {
    const request = 'GET /fast HTTP/1.1\r\nHost: a.test\r\n\r\n';
    const client = openRawClient(proxy.port, request);
    await waitForText(client.text, /\r\n\r\nok$/);
    await sleep(1_000);
    assert.equal(client.socket.destroyed, false);
    client.socket.write('GET /slow/second HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await waitForText(client.text, /late$/);
    client.socket.destroy();
  });
});
