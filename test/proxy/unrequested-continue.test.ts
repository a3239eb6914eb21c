import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { UpstreamRegistryOptions } from '../../data-plane/upstreams/registry.js';
import { UNREQUESTED_CONTINUE_CODE } from '../../data-plane/upstreams/target-state.js';
import {
  eventually,
  RawServer,
  sendRaw,
  startHttpServer,
  startProxy,
  upstreamAt,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/**
 * Raw upstream that responds to each request with 100 Continue, which nothing requested, and a
 * 200 whose body is the request body it read. It keeps every request as received. A request
 * for `/switch` gets 101 Switching Protocols instead, which nothing requested either.
 */
class ContinueUpstream extends RawServer {
  readonly requests: string[] = [];
  /** False once the upstream is fixed: responses then come without the 100 Continue. */
  sendsContinue = true;

  protected accept(socket: Socket): void {
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const headEnd = text.indexOf('\r\n\r\n');
      if (headEnd === -1) return;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text)?.[1] ?? '0');
      if (text.length < headEnd + 4 + length) return;
      const body = text.slice(headEnd + 4, headEnd + 4 + length);
      this.requests.push(text.slice(0, headEnd + 4 + length));
      const path = text.split(' ')[1];
      text = text.slice(headEnd + 4 + length);
      if (path === '/switch') {
        socket.write(
          'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n',
        );
        return;
      }
      socket.write(
        (this.sendsContinue ? 'HTTP/1.1 100 Continue\r\n\r\n' : '') +
          `HTTP/1.1 200 OK\r\nContent-Length: ${body.length + 2}\r\n\r\nok${body}`,
      );
    });
  }
}

/** Starts `upstream` and a proxy whose only route sends every request to it. */
async function startLegacyProxy(
  upstream: ContinueUpstream,
  registryOptions: UpstreamRegistryOptions = {},
): Promise<ProxyFixture> {
  await upstream.start();
  const proxy = await startProxy(registryOptions);
  proxy.publishOne('legacy', upstream.port);
  return proxy;
}

// The tests run in order: the first request with a body finds the target out, and the requests
// after it go through `node:http`.
describe('unrequested 100 Continue', () => {
  const upstream = new ContinueUpstream();
  let proxy: ProxyFixture;
  before(async () => (proxy = await startLegacyProxy(upstream)));
  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('answers 502 to the first POST', async () => {
    const response = await sendRaw(
      proxy.port,
      'POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi',
    );
    const marked = proxy.logs.filter((line) => line.code === UNREQUESTED_CONTINUE_CODE);

    assert.match(response, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(response, /"error":"upstream_error"/);
    assert.equal(upstream.requests.length, 1);
    assert.equal(marked.length, 1);
  });

  it('sends later requests through node:http', async () => {
    const response = await sendRaw(
      proxy.port,
      'POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi',
    );
    const forwarded = upstream.requests.at(-1) ?? '';

    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(response, /100 Continue/);
    assert.ok(response.endsWith('\r\n\r\nokhi'), JSON.stringify(response));
    assert.equal(upstream.requests.length, 2);
    assert.doesNotMatch(forwarded, /^expect:/im);
  });

  it('answers 502 to an unrequested 101', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET /switch HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );

    assert.match(response, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(response, /"error":"upstream_error"/);
    assert.match(response, /cannot read/);
  });

  it('answers 502 to a 101 after 100-continue', async () => {
    const response = await sendRaw(
      proxy.port,
      'POST /switch HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n' +
        'Connection: close\r\n\r\nhi',
    );

    assert.match(response, /^HTTP\/1\.1 (100 Continue\r\n\r\nHTTP\/1\.1 )?502 Bad Gateway\r\n/);
    assert.match(response, /cannot read/);
  });
});

describe('unrequested 100 Continue to a GET', () => {
  const upstream = new ContinueUpstream();
  let proxy: ProxyFixture;
  before(async () => (proxy = await startLegacyProxy(upstream)));
  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('sends the GET again', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    const marked = proxy.logs.filter((line) => line.code === UNREQUESTED_CONTINUE_CODE);

    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(response, /100 Continue/);
    assert.ok(response.endsWith('\r\n\r\nok'), JSON.stringify(response));
    assert.equal(upstream.requests.length, 2);
    assert.equal(marked.length, 1);
  });

  it('sends no 1xx to an HTTP/1.0 client', async () => {
    const response = await sendRaw(proxy.port, 'GET /page HTTP/1.0\r\nHost: a\r\n\r\n');

    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(response, /100 Continue/);
  });
});

describe('unrequested 100 Continue with retries', () => {
  const legacy = new ContinueUpstream();
  let plain: RunningServer;
  let proxy: ProxyFixture;
  const get = 'GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n';

  before(async () => {
    await legacy.start();
    plain = await startHttpServer((_req, res) => res.end('plain'));
    proxy = await startProxy();
    const targets = [legacy.port, plain.port].map((port) => ({
      url: `http://127.0.0.1:${port}`,
      weight: 1,
    }));
    proxy.publish(
      [{ name: 'pair', path: '/*', upstream: 'pair', retries: 1 }],
      [{ name: 'pair', targets }],
    );
  });

  after(async () => {
    await proxy.close();
    await plain.close();
  });

  it('retries a marked target that refuses', async () => {
    // The round-robin balancer alternates, so two GETs reach the legacy target and mark it.
    for (let i = 0; i < 2; i++) await sendRaw(proxy.port, get);
    const marked = proxy.logs.filter((line) => line.code === UNREQUESTED_CONTINUE_CODE);
    await legacy.close();
    const responses: string[] = [];
    for (let i = 0; i < 4; i++) responses.push(await sendRaw(proxy.port, get));

    assert.equal(marked.length, 1);
    for (const response of responses) {
      assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
      assert.ok(response.endsWith('\r\n\r\nplain'), JSON.stringify(response));
    }
  });
});

describe('unrequested 100 Continue mark expiry', () => {
  const upstream = new ContinueUpstream();
  let proxy: ProxyFixture;
  const get = 'GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n';
  // A mark of 50 ms ends between two requests once the test has waited longer than that.
  const markMs = 50;

  before(
    async () => (proxy = await startLegacyProxy(upstream, { unrequestedContinueMarkMs: markMs })),
  );
  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('sends requests through the pool after the mark', async () => {
    const first = await sendRaw(proxy.port, get);
    const marked = proxy.logs.filter((line) => line.code === UNREQUESTED_CONTINUE_CODE);
    // The request that undici failed on, then the same request through node:http.
    const [pooled, own] = upstream.requests;
    upstream.sendsContinue = false;
    await sleep(2 * markMs);
    const second = await sendRaw(proxy.port, get);
    const afterExpiry = upstream.requests.slice(2);
    const unmarked = proxy.logs.filter(
      (line) =>
        line.msg === 'upstream target unmarked: its requests go through the connection pool again',
    );

    assert.match(first, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(marked.length, 1);
    assert.equal(marked[0]?.markMs, markMs);
    assert.match(pooled ?? '', /^connection: keep-alive\r$/im);
    assert.match(own ?? '', /^connection: close\r$/im);
    assert.match(second, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(second.endsWith('\r\n\r\nok'), JSON.stringify(second));
    assert.equal(afterExpiry.length, 1);
    assert.match(afterExpiry[0] ?? '', /^connection: keep-alive\r$/im);
    assert.equal(unmarked.length, 1);
    assert.equal(unmarked[0]?.reason, 'mark expired');
    assert.equal(unmarked[0]?.code, UNREQUESTED_CONTINUE_CODE);
    assert.equal(
      proxy.logs.filter((line) => line.code === UNREQUESTED_CONTINUE_CODE && line.level === 40)
        .length,
      1,
    );
  });

  it('marks a target again that still sends 100', async () => {
    upstream.sendsContinue = true;
    const before = upstream.requests.length;
    const response = await sendRaw(proxy.port, get);
    const marks = proxy.logs.filter(
      (line) => line.code === UNREQUESTED_CONTINUE_CODE && line.level === 40,
    );

    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(upstream.requests.length - before, 2);
    assert.equal(marks.length, 2);
  });
});

describe('unrequested 100 Continue health checks', () => {
  const upstream = new ContinueUpstream();
  let proxy: ProxyFixture;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publish(
      [{ name: 'legacy', path: '/*', upstream: 'legacy' }],
      [
        {
          ...upstreamAt('legacy', upstream.port),
          healthCheck: {
            path: '/healthz',
            intervalMs: 50,
            timeoutMs: 1_000,
            healthyThreshold: 1,
            unhealthyThreshold: 1,
          },
        },
      ],
    );
  });
  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('passes checks of a target sending 100', async () => {
    // The first check fails in undici on the 100 and marks the target. It and the later ones
    // then go over connections of their own.
    const checked = await eventually(
      () => upstream.requests.filter((request) => request.startsWith('GET /healthz ')).length >= 4,
    );
    const marked = proxy.logs.filter(
      (line) => line.code === UNREQUESTED_CONTINUE_CODE && line.level === 40,
    );
    const unhealthy = proxy.logs.filter((line) => line.msg === 'target unhealthy');

    assert.ok(checked, 'fewer than four health checks arrived');
    assert.equal(marked.length, 1);
    assert.deepEqual(unhealthy, []);
  });
});
