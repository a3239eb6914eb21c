import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { LoomError } from '../../common/errors.js';
import type { Upstream } from '../../proto/gen/loom/v1/config.js';
import { UpstreamRegistry } from '../../data-plane/upstreams/registry.js';
import {
  captureLogger,
  send,
  startHttpServer,
  startProxy,
  upstreamAt,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

const silent = pino({ level: 'silent' });

function assertLoomError(err: unknown, code: string): LoomError {
  assert.ok(err instanceof LoomError, `expected a LoomError, got ${String(err)}`);
  assert.equal(err.code, code);
  return err;
}

describe('UpstreamRegistry', () => {
  it('rejects invalid targets and changes nothing', () => {
    const registry = new UpstreamRegistry({ logger: silent });
    const balancers = registry.update([upstreamAt('api', 8080)]);
    const pool = balancers.get('api')?.pick()?.pool;
    const invalid: Upstream[] = [
      upstreamAt('api', 8080),
      upstreamAt('new', 9090),
      { name: 'files', targets: [{ url: 'ftp://files.test/pub', weight: 1 }] },
      { name: 'broken', targets: [{ url: 'http://ok.test', weight: 1.5 }] },
    ];

    let error: LoomError | undefined;
    try {
      registry.update(invalid);
    } catch (err) {
      error = assertLoomError(err, 'LOOM_SNAPSHOT_REJECTED');
    }

    assert.ok(error !== undefined, 'update accepted an ftp target');
    assert.match(error.message, /upstream "files" targets\[0\] url "ftp:\/\/files.test\/pub"/);
    assert.match(error.message, /unsupported scheme "ftp"/);
    assert.match(error.message, /upstream "broken" targets\[0\] .*invalid weight 1.5/);
    assert.equal(registry.size, 1);
    assert.equal(pool?.closed, false);
    void registry.close();
  });

  it('rejects duplicate upstream names', () => {
    const registry = new UpstreamRegistry({ logger: silent });

    assert.throws(
      () => registry.update([upstreamAt('api', 8080), upstreamAt('api', 8081)]),
      (err) => {
        assertLoomError(err, 'LOOM_SNAPSHOT_REJECTED');
        assert.match((err as Error).message, /upstream "api": duplicate upstream name/);
        return true;
      },
    );
    assert.equal(registry.size, 0);
  });

  it('names the fix for an unreadable CA file', () => {
    const registry = new UpstreamRegistry({ logger: silent });
    const secure: Upstream = {
      ...upstreamAt('secure', 8443),
      tls: { caFile: '/nonexistent/loom-ca.pem', serverName: '', insecureSkipVerify: false },
    };

    assert.throws(
      () => registry.update([secure]),
      (err) => {
        assertLoomError(err, 'LOOM_SNAPSHOT_REJECTED');
        const message = (err as Error).message;
        assert.match(message, /upstream "secure" tls\.caFile "\/nonexistent\/loom-ca\.pem"/);
        assert.match(message, /cannot read \(ENOENT\)/);
        assert.match(message, /readable by every proxy process on its own host/);
        assert.match(message, /restart the proxy/);
        return true;
      },
    );
    assert.equal(registry.size, 0);
  });

  it('shares one pool between targets of one origin', () => {
    const registry = new UpstreamRegistry({ logger: silent });

    const balancers = registry.update([
      upstreamAt('v1', 8080, '/v1'),
      upstreamAt('v2', 8080, '/v2/'),
      upstreamAt('other', 8081),
    ]);
    const v1 = balancers.get('v1')?.pick();
    const v2 = balancers.get('v2')?.pick();

    assert.equal(registry.size, 2);
    assert.equal(v1?.pool, v2?.pool);
    assert.equal(v1?.basePath, '/v1');
    assert.equal(v2?.basePath, '/v2/');
    assert.notEqual(balancers.get('other')?.pick()?.pool, v1?.pool);
    void registry.close();
  });

  it('keeps the pool when only the weight changes', () => {
    const registry = new UpstreamRegistry({ logger: silent });
    const first = registry
      .update([upstreamAt('api', 8080, '', 1)])
      .get('api')
      ?.pick();

    const second = registry
      .update([upstreamAt('api', 8080, '', 5)])
      .get('api')
      ?.pick();

    assert.equal(second?.weight, 5);
    assert.equal(second?.pool, first?.pool);
    assert.equal(first?.pool.closed, false);
    void registry.close();
  });

  it('unmarks a target whose pool is rebuilt', () => {
    const { logger, lines } = captureLogger();
    const registry = new UpstreamRegistry({ logger });
    const secure = (serverName: string, weight: number): Upstream => ({
      name: 'secure',
      targets: [{ url: 'https://127.0.0.1:8443', weight }],
      tls: { caFile: '', serverName, insecureSkipVerify: false },
    });
    const first = registry
      .update([secure('a.test', 1)])
      .get('secure')
      ?.pick();
    first?.state.markUnrequestedContinue();

    const sameTls = registry
      .update([secure('a.test', 2)])
      .get('secure')
      ?.pick();
    const keptMark = sameTls?.state.sendsUnrequestedContinue;
    const otherTls = registry
      .update([secure('b.test', 2)])
      .get('secure')
      ?.pick();
    const unmarked = lines.filter((line) => line.msg.startsWith('upstream target unmarked'));

    assert.equal(sameTls?.pool, first?.pool);
    assert.equal(keptMark, true);
    assert.notEqual(otherTls?.pool, first?.pool);
    assert.equal(otherTls?.state, first?.state);
    assert.equal(otherTls?.state.sendsUnrequestedContinue, false);
    assert.equal(unmarked.length, 1);
    assert.equal(unmarked[0]?.reason, 'connection pool rebuilt');
    assert.equal(unmarked[0]?.target, 'https://127.0.0.1:8443');
    void registry.close();
  });

  it('closes every pool on close', async () => {
    const registry = new UpstreamRegistry({ logger: silent });
    const balancers = registry.update([upstreamAt('a', 8080), upstreamAt('b', 8081)]);

    await registry.close();

    assert.equal(balancers.get('a')?.pick()?.pool.closed, true);
    assert.equal(balancers.get('b')?.pick()?.pool.closed, true);
    assert.equal(registry.size, 0);
    assert.throws(
      () => registry.update([]),
      (err) => Boolean(assertLoomError(err, 'LOOM_UNAVAILABLE')),
    );
  });

  it('rejects invalid timeouts', () => {
    const cases = [
      { keepAliveTimeout: 0 },
      { connectTimeout: -1 },
      { headersTimeout: 1.5 },
      { bodyTimeout: Number.NaN },
      { connections: 0 },
      { unrequestedContinueMarkMs: 0 },
    ];

    for (const options of cases) {
      assert.throws(
        () => new UpstreamRegistry({ logger: silent, ...options }),
        (err) => Boolean(assertLoomError(err, 'LOOM_INVALID_ARGUMENT')),
        JSON.stringify(options),
      );
    }
  });
});

describe('UpstreamRegistry with live connections', () => {
  let proxy: ProxyFixture;
  let first: RunningServer;
  let second: RunningServer;
  /** Client port of the proxy connection, for each request an upstream received. */
  const remotePorts: Array<{ server: string; port: number | undefined }> = [];
  /** Connections each upstream accepted. */
  const sockets = new Map<string, Socket[]>();

  async function startUpstream(name: string): Promise<RunningServer> {
    const running = await startHttpServer((req, res) => {
      remotePorts.push({ server: name, port: req.socket.remotePort });
      res.end(name);
    });
    sockets.set(name, []);
    running.server.on('connection', (socket: Socket) => sockets.get(name)?.push(socket));
    return running;
  }

  /** Returns the upstream `both` with the servers `first` and `second` as targets. */
  function bothUpstream(firstWeight: number, secondWeight: number): Upstream {
    return {
      name: 'both',
      targets: [
        { url: `http://127.0.0.1:${first.port}`, weight: firstWeight },
        { url: `http://127.0.0.1:${second.port}`, weight: secondWeight },
      ],
    };
  }

  before(async () => {
    first = await startUpstream('first');
    second = await startUpstream('second');
    proxy = await startProxy();
  });

  after(async () => {
    await proxy.close();
    await first.close();
    await second.close();
  });

  it('keeps the upstream connection across an update', async () => {
    proxy.publish(
      [{ name: 'first', path: '/first', upstream: 'first' }],
      [upstreamAt('first', first.port)],
    );
    const beforeUpdate = await send(proxy.port, '/first');

    proxy.publish(
      [
        { name: 'first', path: '/first', upstream: 'first' },
        { name: 'second', path: '/second', upstream: 'second' },
      ],
      [upstreamAt('first', first.port, '', 3), upstreamAt('second', second.port)],
    );
    const afterUpdate = await send(proxy.port, '/first');

    assert.equal(beforeUpdate.body.toString(), 'first');
    assert.equal(afterUpdate.body.toString(), 'first');
    const ports = remotePorts.filter((entry) => entry.server === 'first').map((e) => e.port);
    assert.equal(ports.length, 2);
    assert.equal(ports[1], ports[0], 'the proxy opened a new upstream connection');
    assert.equal(sockets.get('first')?.length, 1);
  });

  it('closes the connection of a removed target', async () => {
    const table = proxy.publish(
      [
        { name: 'first', path: '/first', upstream: 'first' },
        { name: 'second', path: '/second', upstream: 'second' },
      ],
      [upstreamAt('first', first.port), upstreamAt('second', second.port)],
    );
    await send(proxy.port, '/first');
    await send(proxy.port, '/second');
    const match = table.router.find('GET', undefined, '/second');
    const secondPool = match.kind === 'found' ? match.value.balancer?.pick()?.pool : undefined;
    const secondSockets = sockets.get('second') ?? [];
    assert.ok(secondSockets.length > 0);
    assert.ok(secondSockets.every((socket) => !socket.destroyed));

    proxy.publish(
      [{ name: 'first', path: '/first', upstream: 'first' }],
      [upstreamAt('first', first.port)],
    );
    for (let i = 0; i < 250 && !secondSockets.every((socket) => socket.destroyed); i++) {
      await sleep(20);
    }

    assert.equal(secondPool?.closed, true);
    assert.ok(
      secondSockets.every((socket) => socket.destroyed),
      'the removed target kept its connection open',
    );
    assert.ok(sockets.get('first')?.every((socket) => !socket.destroyed));
    assert.equal(proxy.registry.size, 1);
    assert.equal((await send(proxy.port, '/first')).status, 200);
  });

  it('balances requests by weight', async () => {
    proxy.publish([{ name: 'both', path: '/both', upstream: 'both' }], [bothUpstream(3, 1)]);
    const served: string[] = [];

    for (let i = 0; i < 8; i++) {
      served.push((await send(proxy.port, '/both')).body.toString());
    }

    assert.deepEqual(served, [
      'first',
      'first',
      'second',
      'first',
      'first',
      'first',
      'second',
      'first',
    ]);
  });

  it('continues round robin across snapshots', async () => {
    const both = bothUpstream(1, 1);
    const served: string[] = [];

    // Each snapshot changes another upstream only, as when other routes are applied.
    for (let i = 0; i < 6; i++) {
      proxy.publish(
        [{ name: 'both', path: '/both', upstream: 'both' }],
        [both, upstreamAt(`other-${i}`, first.port)],
      );
      served.push((await send(proxy.port, '/both')).body.toString());
    }

    assert.deepEqual(served, ['first', 'second', 'first', 'second', 'first', 'second']);
  });
});
