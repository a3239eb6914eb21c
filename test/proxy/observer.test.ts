import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { AccessLog } from '../../data-plane/observability/access-log.js';
import { MetricsObserver } from '../../data-plane/observability/metrics-observer.js';
import { ProxyMetrics } from '../../data-plane/observability/proxy-metrics.js';
import { findFreePort } from '../helpers/ports.js';
import { parseExposition, sampleValue } from '../operations/exposition.js';
import {
  pausedClient,
  send,
  SEND_TIMEOUT_MS,
  startHttpServer,
  startProxy,
  streamBody,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

describe('proxy upstream metrics', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  let metrics: ProxyMetrics;
  let good: string;
  let dead: string;
  let suiteStart: number;

  before(async () => {
    suiteStart = performance.now();
    upstream = await startHttpServer((req, res) => {
      req.resume();
      res.writeHead(req.url?.endsWith('/bad') ? 502 : 200);
      res.end('answer');
    });
    upstream.server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.end(
        'HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n',
      );
    });
    good = `http://127.0.0.1:${upstream.port}`;
    // A free port that nothing listens on refuses connections.
    dead = `http://127.0.0.1:${await findFreePort()}`;
    metrics = new ProxyMetrics();
    proxy = await startProxy({}, { observer: new MetricsObserver(metrics, AccessLog.disabled()) });
    proxy.publish(
      [
        { name: 'retried', path: '/retried/*', upstream: 'pair', retries: 1 },
        { name: 'single', path: '/single/*', upstream: 'single' },
      ],
      [
        {
          name: 'pair',
          targets: [
            { url: dead, weight: 1 },
            { url: good, weight: 1 },
          ],
        },
        { name: 'single', targets: [{ url: good, weight: 1 }] },
      ],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  async function sample(name: string, labels: Record<string, string>) {
    return sampleValue(parseExposition(await metrics.registry.metrics()), name, labels);
  }

  it('records each attempt of a retry', async () => {
    const response = await send(proxy.port, '/retried/x');

    assert.equal(response.status, 200);
    const errors = 'loom_proxy_upstream_errors_total';
    assert.equal(await sample(errors, { target: dead, kind: 'unreachable' }), 1);
    assert.equal(await sample(errors, { target: good }), undefined);
    const durations = 'loom_proxy_upstream_request_duration_seconds_count';
    assert.equal(await sample(durations, { upstream: 'pair', target: good }), 1);
    assert.equal(await sample(durations, { upstream: 'pair', target: dead }), undefined);
    assert.equal(await sample('loom_proxy_retries_total', { route: 'retried' }), 1);
  });

  it('counts upstream 502 as a response', async () => {
    const response = await send(proxy.port, '/single/bad');

    assert.equal(response.status, 502);
    assert.equal(response.body.toString(), 'answer');
    const durations = 'loom_proxy_upstream_request_duration_seconds_count';
    assert.equal(await sample(durations, { upstream: 'single', target: good }), 1);
    assert.equal(
      await sample('loom_proxy_upstream_errors_total', { upstream: 'single', target: good }),
      undefined,
    );
    assert.equal(
      await sample('loom_proxy_requests_total', { route: 'single', status_class: '5xx' }),
      1,
    );
  });

  it('records 100-continue requests', async () => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: proxy.port,
      path: '/single/upload',
      method: 'POST',
      headers: { expect: '100-continue', 'content-length': '5' },
      agent: false,
    });
    req.on('continue', () => req.end('hello'));
    req.flushHeaders();
    const [res] = (await within(once(req, 'response'), 'the upload response')) as [IncomingMessage];
    res.resume();
    await within(once(res, 'end'), 'the response body');

    assert.equal(res.statusCode, 200);
    const requests = { route: 'single', method: 'POST', status_class: '2xx' };
    assert.equal(await sample('loom_proxy_requests_total', requests), 1);
    const durations = 'loom_proxy_upstream_request_duration_seconds_count';
    assert.equal(await sample(durations, { upstream: 'single', target: good }), 2);
  });

  it('records upgrade attempts and duration', async () => {
    const client = connect(proxy.port, '127.0.0.1');
    client.write(
      'GET /single/ws HTTP/1.1\r\nhost: example.test\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n',
    );
    let received = '';
    client.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    await within(once(client, 'close'), 'the tunnel close');

    assert.match(received, /^HTTP\/1\.1 101 /);
    const durations = 'loom_proxy_upstream_request_duration_seconds_count';
    assert.equal(await sample(durations, { upstream: 'single', target: good }), 3);
    // Every request of the route ran inside this suite, so their durations add up to less
    // than the suite's elapsed time. A duration counted from process start would not.
    const total = await sample('loom_proxy_request_duration_seconds_sum', { route: 'single' });
    assert.notEqual(total, undefined);
    assert.ok((total ?? Infinity) < (performance.now() - suiteStart) / 1000, `${total}`);
  });
});

describe('send timeout metric', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  let metrics: ProxyMetrics;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-length': String(32 * 1024 * 1024) });
      streamBody(res, 32 * 1024 * 1024);
    });
    metrics = new ProxyMetrics();
    proxy = await startProxy(
      {},
      {
        sendTimeoutMs: SEND_TIMEOUT_MS,
        observer: new MetricsObserver(metrics, AccessLog.disabled()),
      },
    );
    proxy.publishOne('big', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('counts a cut client', async () => {
    const { socket, closed } = await pausedClient(proxy.port);
    socket.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
    const count = async () =>
      sampleValue(
        parseExposition(await metrics.registry.metrics()),
        'loom_proxy_send_timeouts_total',
        {},
      );
    let value: number | undefined;
    for (let i = 0; i < 100 && value !== 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      value = await count();
    }
    socket.resume();
    await within(closed, 'the client to see the closed connection');
    assert.equal(value, 1);
  });
});
