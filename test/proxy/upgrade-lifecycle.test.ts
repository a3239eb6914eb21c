import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  eventually,
  openRawClient,
  RawServer,
  sendRaw,
  startProxy,
  upstreamAt,
  waitForText,
  within,
  type ProxyFixture,
  type RawClient,
  type StubRoute,
} from './harness.js';

function handshake(path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;
}

/**
 * Raw upstream: `/ws/hang` reads the request and never responds, `/ws/echo` switches protocols
 * and echoes, `/ws/refused` responds 403 with a body delimited by the connection close and
 * then waits for the test to cut it, `/ws/stalled` responds 200 with one chunk and stalls.
 */
class RawUpstream extends RawServer {
  /** One promise for each of `sockets` that resolves when it closes. */
  readonly closed: Promise<unknown>[] = [];

  /** Waits until `count` connections have sent their request head. */
  async waitForRequests(count: number): Promise<void> {
    for (let i = 0; i < 250 && this.#requests < count; i++) await sleep(20);
    assert.ok(this.#requests >= count, `${this.#requests} of ${count} upstream requests arrived`);
  }

  #requests = 0;

  protected accept(socket: Socket): void {
    this.closed.push(new Promise((resolve) => socket.once('close', resolve)));
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      this.#requests++;
      this.#answer(socket, head.slice(0, end), head.slice(end + 4));
    };
    socket.on('data', onData);
  }

  #answer(socket: Socket, head: string, rest: string): void {
    const path = head.split(' ')[1];
    if (path.endsWith('/echo')) {
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      );
      if (rest !== '') socket.write(rest);
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    } else if (path.endsWith('/refused')) {
      socket.write('HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\npartial');
    } else if (path.endsWith('/stalled')) {
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
    }
    // Anything else hangs: the request was read and gets no response.
  }
}

describe('upgrade lifecycle', () => {
  const upstream = new RawUpstream();
  let proxy: ProxyFixture;
  let strictProxy: ProxyFixture;
  let drainProxy: ProxyFixture;

  const routes: StubRoute[] = [
    { name: 'ws', path: '/ws/*', upstream: 'ws' },
    {
      name: 'slow',
      path: '/slow/*',
      upstream: 'ws',
      timeouts: { connectMs: 0, responseHeaderMs: 200, idleBodyMs: 0 },
    },
  ];

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publish(routes, [upstreamAt('ws', upstream.port)]);
    strictProxy = await startProxy({}, { upstreamHeadersTimeoutMs: 200 });
    strictProxy.publish(routes, [upstreamAt('ws', upstream.port)]);
    drainProxy = await startProxy({}, { tunnelDrainTimeoutMs: 100 });
  });

  after(async () => {
    await proxy.close();
    await strictProxy.close();
    await drainProxy.close();
    await upstream.close();
  });

  it('closes both sides on client FIN before 101', async () => {
    const first = upstream.sockets.length;
    const clients: RawClient[] = [];
    for (let i = 0; i < 20; i++) clients.push(openRawClient(proxy.port, handshake('/ws/hang')));
    await upstream.waitForRequests(first + clients.length);
    for (const client of clients) client.socket.end();

    await within(Promise.all(clients.map((client) => client.closed)), 'the proxy to close clients');
    await within(
      Promise.all(upstream.closed.slice(first)),
      'the proxy to close its upstream connections',
    );
    for (const client of clients) assert.equal(client.text(), '');
  });

  it('closes the upstream on client FIN during a body', async () => {
    const first = upstream.sockets.length;
    const client = openRawClient(proxy.port, handshake('/ws/stalled'));
    await waitForText(client.text, /hello\r\n$/);
    client.socket.end();

    await within(upstream.closed[first], 'the proxy to close its upstream connection');
    await within(client.closed, 'the proxy to close the client');
    assert.match(client.text(), /^HTTP\/1\.1 200 OK\r\n/);
  });

  it('answers 504 when the upstream stays silent', async () => {
    const response = await sendRaw(strictProxy.port, handshake('/ws/hang'));

    assert.match(response, /^HTTP\/1\.1 504 Gateway Timeout\r\n/);
    assert.match(response, /"error":"upstream_timeout"/);
  });

  it("applies the route's response header timeout", async () => {
    const first = upstream.sockets.length;
    const response = await sendRaw(proxy.port, handshake('/slow/hang'));

    assert.match(response, /^HTTP\/1\.1 504 Gateway Timeout\r\n/);
    assert.match(response, /"route":"slow"/);
    await within(Promise.all(upstream.closed.slice(first)), 'the upstream connection to close');
  });

  it('resets the client when a refused upgrade is cut', async () => {
    const first = upstream.sockets.length;
    const client = openRawClient(proxy.port, handshake('/ws/refused'));
    await waitForText(client.text, /partial$/);
    upstream.sockets[first].resetAndDestroy();

    await within(client.closed, 'the client connection to close');
    assert.match(client.text(), /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.doesNotMatch(client.text(), /content-length/i);
    assert.equal(client.error()?.code, 'ECONNRESET');
  });

  it('counts open tunnels as in flight', async () => {
    const counting = await startProxy();
    const clients: RawClient[] = [];
    try {
      const table = counting.publish(
        [{ name: 'ws', path: '/ws/*', upstream: 'pair' }],
        [
          {
            name: 'pair',
            balancer: 'least-request',
            targets: [
              { url: `http://127.0.0.1:${upstream.port}/a`, weight: 1 },
              { url: `http://127.0.0.1:${upstream.port}/b`, weight: 1 },
            ],
          },
        ],
      );
      const match = table.router.find('GET', undefined, '/ws/echo');
      assert.equal(match.kind, 'found');
      const targets = match.value.balancer?.targets ?? [];
      const inFlight = () => targets.map((target) => target.state.active);

      const first = openRawClient(counting.port, handshake('/ws/echo'));
      clients.push(first);
      await waitForText(first.text, /\r\n\r\n$/);
      assert.deepEqual(inFlight().sort(), [0, 1]);
      // The open tunnel counts in the target's load, so the next one goes to the other target.
      const second = openRawClient(counting.port, handshake('/ws/echo'));
      clients.push(second);
      await waitForText(second.text, /\r\n\r\n$/);
      assert.deepEqual(inFlight(), [1, 1]);

      first.socket.destroy();
      second.socket.end();
      await within(Promise.all([first.closed, second.closed]), 'the tunnels to close');
      assert.ok(
        await eventually(() => inFlight().every((active) => active === 0)),
        `in flight after close: ${inFlight().join(', ')}`,
      );
    } finally {
      for (const client of clients) client.socket.destroy();
      await counting.close();
    }
  });

  it('counts a refused upgrade until its body ends', async () => {
    const counting = await startProxy();
    const table = counting.publish(routes, [upstreamAt('ws', upstream.port)]);
    const match = table.router.find('GET', undefined, '/ws/refused');
    assert.equal(match.kind, 'found');
    const target = match.value.balancer?.targets[0];
    assert.ok(target !== undefined);
    const first = upstream.sockets.length;
    const client = openRawClient(counting.port, handshake('/ws/refused'));
    try {
      await waitForText(client.text, /partial$/);

      // The 403's headers arrived and its body is still open.
      assert.equal(target.state.active, 1);

      upstream.sockets[first].end();
      await within(client.closed, 'the client connection to close');
      assert.match(client.text(), /^HTTP\/1\.1 403 Forbidden\r\n/);
      assert.ok(
        await eventually(() => target.state.active === 0),
        `in flight after the body ended: ${target.state.active}`,
      );
    } finally {
      client.socket.destroy();
      await counting.close();
    }
  });

  it('drains tunnels whose route a swap removed', async () => {
    drainProxy.publish(
      [
        { name: 'kept', path: '/kept/*', upstream: 'ws' },
        { name: 'removed', path: '/removed/*', upstream: 'ws' },
      ],
      [upstreamAt('ws', upstream.port)],
    );
    const kept = openRawClient(drainProxy.port, handshake('/kept/echo'));
    const removed = openRawClient(drainProxy.port, handshake('/removed/echo'));
    await waitForText(kept.text, /\r\n\r\n$/);
    await waitForText(removed.text, /\r\n\r\n$/);

    drainProxy.publish(
      [
        { name: 'kept', path: '/kept/*', upstream: 'ws' },
        { name: 'added', path: '/added/*', upstream: 'ws' },
      ],
      [upstreamAt('ws', upstream.port)],
    );
    await within(removed.closed, 'the tunnel of the removed route to close');
    kept.socket.write('still-open');
    await waitForText(kept.text, /still-open$/);

    assert.equal(removed.error(), undefined);
    assert.equal(kept.socket.destroyed, false);
    kept.socket.destroy();
  });

  it('drains tunnels whose target a swap removed', async () => {
    const routes: StubRoute[] = [
      { name: 'kept', path: '/kept/*', upstream: 'ws' },
      { name: 'moved', path: '/moved/*', upstream: 'ws' },
      { name: 'weighed', path: '/weighed/*', upstream: 'other' },
    ];
    drainProxy.publish(routes, [
      upstreamAt('ws', upstream.port),
      upstreamAt('other', upstream.port),
    ]);
    const kept = openRawClient(drainProxy.port, handshake('/kept/echo'));
    const moved = openRawClient(drainProxy.port, handshake('/moved/echo'));
    const weighed = openRawClient(drainProxy.port, handshake('/weighed/echo'));
    for (const client of [kept, moved, weighed]) await waitForText(client.text, /\r\n\r\n$/);

    // "moved" now sends to another upstream, and the target of "other" left rotation.
    drainProxy.publish(
      [routes[0], { ...routes[1], upstream: 'spare' }, routes[2]],
      [
        upstreamAt('ws', upstream.port),
        upstreamAt('spare', upstream.port),
        upstreamAt('other', upstream.port, '', 0),
      ],
    );
    await within(moved.closed, 'the tunnel of the moved route to close');
    await within(weighed.closed, 'the tunnel of the target at weight 0 to close');
    kept.socket.write('still-open');
    await waitForText(kept.text, /still-open$/);

    assert.equal(moved.error(), undefined);
    assert.equal(weighed.error(), undefined);
    assert.equal(kept.socket.destroyed, false);
    kept.socket.destroy();
  });
});

/**
 * Raw upstream that rejects every handshake: `/fail` with a complete 503, `/refused` with a
 * complete 403, `/cut` with a 403 whose body it cuts short. After a complete 403, `/trailing`
 * sends bytes that are not HTTP, and `/trailing-chunked` a second head with both
 * Transfer-Encoding and Content-Length. The parser rejects both after the 403 ended.
 */
class RefusingUpstream extends RawServer {
  protected accept(socket: Socket): void {
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      const path = head.split(' ')[1];
      if (path.endsWith('/fail')) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy');
      } else if (path.endsWith('/trailing')) {
        socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nnoXYZ\r\n\r\n');
      } else if (path.endsWith('/trailing-chunked')) {
        socket.end(
          'HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n' +
            'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n',
        );
      } else if (path.endsWith('/cut')) {
        socket.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\npart');
        socket.destroy();
      } else {
        socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno');
      }
    };
    socket.on('data', onData);
  }
}

describe('upgrade passive health', () => {
  const upstream = new RefusingUpstream();

  before(() => upstream.start());
  after(() => upstream.close());

  /**
   * Starts a proxy, closed after test `t`, whose route `/ws/*` ejects the target after
   * `failures` in a row.
   */
  async function proxyEjectingAfter(t: TestContext, failures: number): Promise<ProxyFixture> {
    const proxy = await startProxy();
    t.after(() => proxy.close());
    proxy.publish(
      [{ name: 'ws', path: '/ws/*', upstream: 'ws' }],
      [
        {
          ...upstreamAt('ws', upstream.port),
          passiveHealth: {
            consecutiveFailures: failures,
            baseEjectionMs: 60_000,
            maxEjectionMs: 60_000,
          },
        },
      ],
    );
    return proxy;
  }

  const ejected = (proxy: ProxyFixture): boolean =>
    proxy.logs.some((line) => line.msg === 'target ejected');

  it('ejects a target returning 503', async (t) => {
    const proxy = await proxyEjectingAfter(t, 1);
    const response = await sendRaw(proxy.port, handshake('/ws/fail'));

    assert.match(response, /^HTTP\/1\.1 503 /);
    assert.ok(await eventually(() => ejected(proxy)), 'no target ejected line');
  });

  it('resets the count on a complete 403', async (t) => {
    const proxy = await proxyEjectingAfter(t, 2);
    for (const path of ['/ws/fail', '/ws/refused', '/ws/fail']) {
      await sendRaw(proxy.port, handshake(path));
    }
    assert.equal(ejected(proxy), false);

    await sendRaw(proxy.port, handshake('/ws/fail'));
    assert.ok(await eventually(() => ejected(proxy)), 'no target ejected line');
  });

  it('ignores bytes after a complete 403', async (t) => {
    const proxy = await proxyEjectingAfter(t, 1);
    const plain = await sendRaw(proxy.port, handshake('/ws/trailing'));
    const chunked = await sendRaw(proxy.port, handshake('/ws/trailing-chunked'));
    const failures = proxy.logs.filter(
      (line) =>
        line.msg === 'upstream response to an upgrade request cut' ||
        line.msg === 'upstream trailers dropped: the trailer section contains Content-Length',
    );

    assert.match(plain, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*\r\n\r\nno$/);
    assert.match(chunked, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*\r\n\r\n2\r\nno\r\n0\r\n\r\n$/);
    assert.equal(ejected(proxy), false);
    assert.deepEqual(failures, []);
  });

  it('counts a cut 403 body as failure', async (t) => {
    const proxy = await proxyEjectingAfter(t, 2);
    for (let i = 0; i < 2; i++) {
      const response = await sendRaw(proxy.port, handshake('/ws/cut'));
      assert.match(response, /^HTTP\/1\.1 403 /);
    }
    assert.ok(await eventually(() => ejected(proxy)), 'no target ejected line');
  });
});
