import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import { HashBalancer, MAX_RING_POINTS } from '../../data-plane/upstreams/hash-balancer.js';
import { LeastRequestBalancer } from '../../data-plane/upstreams/least-request-balancer.js';
import { TargetState } from '../../data-plane/upstreams/target-state.js';
import { ProxyMetrics } from '../../data-plane/observability/proxy-metrics.js';
import { parseExposition, sampleValue } from '../operations/exposition.js';
import type { Upstream } from '../../proto/gen/loom/v1/config.js';
import {
  eventually,
  fakeTarget,
  listenNet,
  send,
  startHttpServer,
  startProxy,
  within,
  type RunningServer,
  type SendOptions,
} from './harness.js';

const silent = pino({ level: 'silent' });

async function named(name: string): Promise<RunningServer & { hits: number }> {
  const server = await startHttpServer((req, res) => {
    running.hits++;
    req.resume();
    res.end(name);
  });
  const running = Object.assign(server, { hits: 0 });
  return running;
}

function upstreamOf(name: string, ports: number[], fields: Partial<Upstream> = {}): Upstream {
  return {
    name,
    targets: ports.map((port) => ({ url: `http://127.0.0.1:${port}`, weight: 1 })),
    ...fields,
  };
}

function respondWith500(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  res.statusCode = 500;
  res.end('failing');
}

/** Returns the upstream `checked`, whose targets one failed check takes out of rotation. */
function checkedUpstream(ports: number[], timeoutMs: number): Upstream {
  return upstreamOf('checked', ports, {
    healthCheck: {
      path: '/healthz',
      intervalMs: 50,
      timeoutMs,
      healthyThreshold: 1,
      unhealthyThreshold: 1,
    },
  });
}

describe('LeastRequestBalancer', () => {
  it('prefers the target with fewer requests', () => {
    const busy = fakeTarget('busy');
    const idle = fakeTarget('idle');
    busy.state.active = 10;
    const balancer = new LeastRequestBalancer('api', [busy, idle]);

    for (let i = 0; i < 20; i++) {
      assert.equal(balancer.pick(), idle);
    }
  });

  it('shares idle targets by weight', () => {
    const weights = [1, 2, 5];
    const targets = weights.map((weight, i) => fakeTarget(`t${i}`, weight));
    const balancer = new LeastRequestBalancer('api', targets);
    const picks = 8_000;
    const counts = new Map<UpstreamTarget, number>();

    for (let i = 0; i < picks; i++) {
      const target = balancer.pick();
      assert.ok(target !== undefined);
      counts.set(target, (counts.get(target) ?? 0) + 1);
    }

    // Each expected count is at least 1000, and the bounds lie more than 10 standard deviations
    // from it, so the check does not fail by chance.
    targets.forEach((target, i) => {
      const expected = (picks * weights[i]) / 8;
      const count = counts.get(target) ?? 0;
      assert.ok(Math.abs(count - expected) < expected * 0.3, `${target.url}: ${count} picks`);
    });
  });

  it('skips unavailable targets', () => {
    const down = fakeTarget('down');
    const up = fakeTarget('up');
    down.state.setHealthy(false, 'test');
    const balancer = new LeastRequestBalancer('api', [down, up, fakeTarget('c', 0)]);

    for (let i = 0; i < 20; i++) {
      assert.equal(balancer.pick(), up);
    }
  });
});

describe('HashBalancer', () => {
  const key = (req: { headers: Record<string, string> }) => req.headers['x-user'];

  it('maps a key to the same target', () => {
    const balancer = new HashBalancer(
      'api',
      [fakeTarget('a'), fakeTarget('b'), fakeTarget('c')],
      () => undefined,
    );

    for (let i = 0; i < 50; i++) {
      assert.equal(balancer.pickByKey(`user-${i}`), balancer.pickByKey(`user-${i}`));
    }
    assert.ok(key({ headers: { 'x-user': 'u' } }) === 'u');
  });

  it('moves only keys to an added target', () => {
    const a = fakeTarget('a');
    const b = fakeTarget('b');
    const c = fakeTarget('c');
    const d = fakeTarget('d');
    const before = new HashBalancer('api', [a, b, c], () => undefined);
    const afterAdd = new HashBalancer('api', [a, b, c, d], () => undefined);
    let moved = 0;
    const keys = 4000;

    for (let i = 0; i < keys; i++) {
      const was = before.pickByKey(`k${i}`);
      const now = afterAdd.pickByKey(`k${i}`);
      if (was !== now) {
        moved++;
        assert.equal(now, d, `key k${i} moved between old targets`);
      }
    }
    // About a quarter of the keys move; the bounds leave room for the ring's unevenness.
    assert.ok(moved > keys * 0.15 && moved < keys * 0.35, `moved ${moved} of ${keys}`);
  });

  it('walks past an unavailable owner', () => {
    const a = fakeTarget('a');
    const b = fakeTarget('b');
    const balancer = new HashBalancer('api', [a, b], () => undefined);
    const owner = balancer.pickByKey('session-1');
    owner?.state.setHealthy(false, 'test');

    assert.notEqual(balancer.pickByKey('session-1'), owner);
    b.state.setHealthy(false, 'test');
    a.state.setHealthy(false, 'test');
    assert.ok(balancer.pickByKey('session-1') !== undefined, 'panic mode picked nothing');
  });

  it('checks each target once per walk', () => {
    const targets = ['a', 'b', 'c'].map((name) => fakeTarget(name, 100));
    const balancer = new HashBalancer('api', targets, () => undefined);
    const owners = Array.from({ length: 50 }, (_, i) => balancer.pickByKey(`k${i}`));
    let reads = 0;
    for (const target of targets) {
      target.state.setHealthy(false, 'test');
      const state = target.state;
      Object.defineProperty(state, 'available', {
        get: () => {
          reads++;
          return false;
        },
      });
    }

    // With no target available, the walk stops once it has seen every target instead of going
    // round all 30000 ring points. Panic mode then picks the key's own owner.
    for (let i = 0; i < owners.length; i++) {
      assert.equal(balancer.pickByKey(`k${i}`), owners[i], `owner of k${i}`);
    }
    assert.ok(reads <= owners.length * targets.length, `${reads} availability reads`);
    assert.equal(balancer.pickByKey('k0', targets), owners[0]);
  });

  it('spreads keys within measured bounds', () => {
    // Fair share 1.0; the ring's unevenness with 100 points per target, as the docs state it.
    const keys = 40_000;
    for (const count of [2, 3, 5, 10, 20]) {
      const targets = Array.from({ length: count }, (_, i) => fakeTarget(`10-0-0-${i}`));
      const balancer = new HashBalancer('api', targets, () => undefined);
      const counts = new Map<UpstreamTarget | undefined, number>();
      for (let i = 0; i < keys; i++) {
        const target = balancer.pickByKey(`user-${i}`);
        counts.set(target, (counts.get(target) ?? 0) + 1);
      }

      for (const target of targets) {
        const share = ((counts.get(target) ?? 0) * count) / keys;
        assert.ok(share > 0.8, `${count} targets: ${target.url} share ${share}`);
        assert.ok(share < 1.3, `${count} targets: ${target.url} share ${share}`);
      }
    }
  });

  it('bounds the ring of heavy weights', () => {
    const targets = Array.from({ length: 12 }, (_, i) => fakeTarget(`t${i}`, 10_000));
    targets.push(fakeTarget('light', 1));
    const balancer = new HashBalancer('api', targets, () => undefined);
    const counts = new Map<UpstreamTarget | undefined, number>();
    const keys = 12_000;

    assert.ok(balancer.ringSize <= MAX_RING_POINTS + targets.length, `${balancer.ringSize}`);
    for (let i = 0; i < keys; i++) {
      const target = balancer.pickByKey(`k${i}`);
      counts.set(target, (counts.get(target) ?? 0) + 1);
    }
    for (const target of targets.slice(0, 12)) {
      const share = counts.get(target) ?? 0;
      // Each heavy target should get about 1000 keys.
      assert.ok(share > 700, `${target.url} got ${share} of ${keys}`);
      assert.ok(share < 1300, `${target.url} got ${share} of ${keys}`);
    }
  });

  it('moves only keys of a removed target', () => {
    const a = fakeTarget('a');
    const b = fakeTarget('b');
    const c = fakeTarget('c');
    const before = new HashBalancer('api', [a, b, c], () => undefined);
    const afterRemove = new HashBalancer('api', [a, c], () => undefined);

    for (let i = 0; i < 4000; i++) {
      const was = before.pickByKey(`k${i}`);
      if (was !== b) {
        assert.equal(afterRemove.pickByKey(`k${i}`), was, `key k${i} left a remaining target`);
      }
    }
  });
});

describe('TargetState ejection', () => {
  it('ejects after consecutive failures for a growing time', () => {
    const state = new TargetState('api', 'http://a.test', silent);
    state.configureEjection({
      consecutiveFailures: 2,
      baseEjectionMs: 1_000,
      maxEjectionMs: 5_000,
    });
    const start = performance.now();

    state.recordFailure(start);
    assert.equal(state.ejected, false);
    state.recordFailure(start);
    assert.equal(state.ejected, true);
    assert.equal(state.available, false);
  });

  it('restores an ejected target when ejection is turned off', () => {
    const reported: boolean[] = [];
    const state = new TargetState('api', 'http://a.test', silent, {
      setTargetHealthy: (_upstream, _target, healthy) => reported.push(healthy),
      targetEjected: () => reported.push(false),
    });
    state.configureEjection({
      consecutiveFailures: 1,
      baseEjectionMs: 60_000,
      maxEjectionMs: 60_000,
    });
    state.recordFailure();
    assert.equal(state.ejected, true);

    state.configureEjection(undefined);

    assert.equal(state.ejected, false);
    assert.equal(state.available, true);
    assert.deepEqual(reported, [false, true]);
  });
});

describe('proxy upstream features', () => {
  it('sends a hashed key to one target', async () => {
    const a = await named('a');
    const b = await named('b');
    const proxy = await startProxy();
    try {
      proxy.publish(
        [{ name: 'sticky', path: '/sticky', upstream: 'sticky' }],
        [upstreamOf('sticky', [a.port, b.port], { balancer: 'hash', hashOn: 'header:x-user' })],
      );
      const served = new Set<string>();
      for (let i = 0; i < 10; i++) {
        const response = await send(proxy.port, '/sticky', { headers: { 'x-user': 'alice' } });
        served.add(response.body.toString());
      }

      assert.equal(served.size, 1);
    } finally {
      await proxy.close();
      await a.close();
      await b.close();
    }
  });

  it('least request shares sequential requests by weight', async () => {
    const light = await named('light');
    const heavy = await named('heavy');
    const weighted: Upstream = {
      name: 'weighted',
      balancer: 'least-request',
      targets: [
        { url: `http://127.0.0.1:${light.port}`, weight: 1 },
        { url: `http://127.0.0.1:${heavy.port}`, weight: 3 },
      ],
    };
    const proxy = await startProxy();
    try {
      proxy.publish([{ name: 'weighted', path: '/weighted', upstream: 'weighted' }], [weighted]);

      for (let i = 0; i < 200; i++) {
        assert.equal((await send(proxy.port, '/weighted')).status, 200);
      }

      // One request at a time leaves both targets idle at every pick, so the weights decide:
      // about 50 requests for the light target, with a standard deviation of about 6.
      assert.ok(light.hits >= 20, `light target served ${light.hits}`);
      assert.ok(light.hits <= 90, `light target served ${light.hits}`);
      assert.equal(light.hits + heavy.hits, 200);
    } finally {
      await proxy.close();
      await light.close();
      await heavy.close();
    }
  });

  it('stops sending to a target that fails health checks', async () => {
    let healthy = true;
    const flaky = await startHttpServer((req, res) => {
      if (req.url === '/healthz') {
        res.statusCode = healthy ? 200 : 503;
      }
      res.end('flaky');
    });
    const steady = await named('steady');
    const proxy = await startProxy();
    try {
      const publish = () =>
        proxy.publish(
          [{ name: 'checked', path: '/checked', upstream: 'checked' }],
          [checkedUpstream([flaky.port, steady.port], 500)],
        );
      publish();
      healthy = false;
      await sleep(300);
      // A new snapshot with the same targets keeps their health.
      publish();
      const served: string[] = [];
      for (let i = 0; i < 6; i++) {
        served.push((await send(proxy.port, '/checked')).body.toString());
      }

      assert.deepEqual(new Set(served), new Set(['steady']));
      assert.ok(proxy.logs.some((line) => line.msg === 'target unhealthy'));
    } finally {
      await proxy.close();
      await flaky.close();
      await steady.close();
    }
  });

  it('fails a check whose body trickles', async () => {
    let checks = 0;
    let trickleClosed = false;
    const trickles: NodeJS.Timeout[] = [];
    const slow = await startHttpServer((req, res) => {
      if (req.url !== '/healthz') {
        res.end('slow');
        return;
      }
      checks++;
      if (checks > 1) {
        res.statusCode = 503;
        res.end();
        return;
      }
      // Each byte comes well within the idle body timeout, and the body never ends.
      res.writeHead(200, { 'content-type': 'text/plain' });
      trickles.push(setInterval(() => res.write('.'), 50));
      res.on('close', () => {
        trickleClosed = true;
      });
    });
    const steady = await named('steady');
    const proxy = await startProxy();
    try {
      proxy.publish(
        [{ name: 'checked', path: '/checked', upstream: 'checked' }],
        [checkedUpstream([slow.port, steady.port], 300)],
      );
      const unhealthy = await eventually(
        () => proxy.logs.some((line) => line.msg === 'target unhealthy'),
        10_000,
      );

      assert.ok(unhealthy, `target still healthy after ${checks} checks`);
      assert.ok(await eventually(() => trickleClosed), 'trickling check connection left open');
      const served: string[] = [];
      for (let i = 0; i < 4; i++) {
        served.push((await send(proxy.port, '/checked')).body.toString());
      }
      assert.deepEqual(new Set(served), new Set(['steady']));
    } finally {
      for (const timer of trickles) clearInterval(timer);
      await proxy.close();
      await slow.close();
      await steady.close();
    }
  });

  it('ejects a target that fails', async () => {
    const failures: Array<[string, (req: IncomingMessage, res: ServerResponse) => void]> = [
      [
        '5xx',
        (_req, res) => {
          res.statusCode = 500;
          res.end('failing');
        },
      ],
      [
        'body cut by a reset',
        (req, res) => {
          res.writeHead(200, { 'content-length': '100' });
          res.write('failing', () => req.socket.resetAndDestroy());
        },
      ],
    ];
    // Requests with `Expect: 100-continue` go through a path of their own.
    const requests: Array<[string, SendOptions]> = [
      ['GET', {}],
      ['upload with Expect', { method: 'PUT', headers: { expect: '100-continue' }, body: 'x' }],
    ];
    const cases = failures.flatMap(([failure, respond]) =>
      requests.map(([request, options]) => [`${failure}, ${request}`, respond, options] as const),
    );
    for (const [kind, respond, options] of cases) {
      const failing = await startHttpServer(respond);
      const steady = await named('steady');
      const proxy = await startProxy();
      try {
        proxy.publish(
          [{ name: 'ejecting', path: '/ejecting', upstream: 'ejecting' }],
          [
            upstreamOf('ejecting', [failing.port, steady.port], {
              passiveHealth: {
                consecutiveFailures: 2,
                baseEjectionMs: 60_000,
                maxEjectionMs: 60_000,
              },
            }),
          ],
        );
        const served: string[] = [];
        for (let i = 0; i < 10; i++) {
          served.push(
            await send(proxy.port, '/ejecting', options).then(
              (response) => response.body.toString(),
              () => 'failing',
            ),
          );
        }

        assert.equal(served.filter((body) => body === 'failing').length, 2, kind);
        assert.ok(
          served.slice(4).every((body) => body === 'steady'),
          `${kind}: ${served.join(' ')}`,
        );
        assert.ok(
          proxy.logs.some((line) => line.msg === 'target ejected'),
          kind,
        );
      } finally {
        await proxy.close();
        await failing.close();
        await steady.close();
      }
    }
  });

  it('restores an idle target when ejection ends', async () => {
    const failing = await startHttpServer(respondWith500);
    const metrics = new ProxyMetrics();
    const proxy = await startProxy({ healthListener: metrics });
    const healthy = async () =>
      sampleValue(parseExposition(await metrics.registry.metrics()), 'loom_proxy_target_healthy', {
        upstream: 'ejecting',
        target: `http://127.0.0.1:${failing.port}`,
      });
    try {
      proxy.publish(
        [{ name: 'ejecting', path: '/ejecting', upstream: 'ejecting' }],
        [
          upstreamOf('ejecting', [failing.port], {
            passiveHealth: { consecutiveFailures: 1, baseEjectionMs: 200, maxEjectionMs: 200 },
          }),
        ],
      );

      assert.equal((await send(proxy.port, '/ejecting')).status, 500);
      assert.ok(proxy.logs.some((line) => line.msg === 'target ejected'));
      assert.equal(await healthy(), 0);
      // No request arrives after the ejection: the restore comes from the timer alone.
      const restored = await eventually(
        () => proxy.logs.some((line) => line.msg === 'target restored'),
        10_000,
      );

      assert.ok(restored, 'no target restored line without a request');
      assert.equal(await healthy(), 1);
      assert.equal(proxy.logs.filter((line) => line.msg === 'target restored').length, 1);
    } finally {
      await proxy.close();
      await failing.close();
    }
  });

  it('labels health by target URL', async () => {
    const server = await startHttpServer((req, res) => {
      req.resume();
      res.statusCode = req.url?.startsWith('/bad') ? 500 : 200;
      res.end();
    });
    const metrics = new ProxyMetrics();
    const proxy = await startProxy({ healthListener: metrics });
    const origin = `http://127.0.0.1:${server.port}`;
    const healthOf = async (target: string) =>
      sampleValue(parseExposition(await metrics.registry.metrics()), 'loom_proxy_target_healthy', {
        upstream: 'paths',
        target,
      });
    try {
      proxy.publish(
        [{ name: 'paths', path: '/paths', upstream: 'paths' }],
        [
          {
            name: 'paths',
            targets: [
              { url: `${origin}/bad`, weight: 1 },
              { url: `${origin}/good`, weight: 1 },
            ],
            passiveHealth: {
              consecutiveFailures: 1,
              baseEjectionMs: 60_000,
              maxEjectionMs: 60_000,
            },
          },
        ],
      );
      // The data plane keeps the series of a snapshot's targets, starting each at 1.
      metrics.retain(
        ['paths'],
        ['bad', 'good'].map((path) => ({ upstream: 'paths', origin, url: `${origin}/${path}` })),
      );
      for (let i = 0; i < 4; i++) await send(proxy.port, '/paths');

      assert.ok(proxy.logs.some((line) => line.msg === 'target ejected'));
      assert.equal(await healthOf(`${origin}/bad`), 0);
      assert.equal(await healthOf(`${origin}/good`), 1);
      assert.equal(await healthOf(origin), undefined);
    } finally {
      await proxy.close();
      await server.close();
    }
  });

  it('stops the restore timer of a removed target', async () => {
    const failing = await startHttpServer(respondWith500);
    const steady = await named('steady');
    const proxy = await startProxy();
    try {
      const passiveHealth = { consecutiveFailures: 1, baseEjectionMs: 200, maxEjectionMs: 200 };
      proxy.publish(
        [{ name: 'ejecting', path: '/ejecting', upstream: 'ejecting' }],
        [upstreamOf('ejecting', [failing.port], { passiveHealth })],
      );
      assert.equal((await send(proxy.port, '/ejecting')).status, 500);
      assert.ok(proxy.logs.some((line) => line.msg === 'target ejected'));

      proxy.publish(
        [{ name: 'ejecting', path: '/ejecting', upstream: 'ejecting' }],
        [upstreamOf('ejecting', [steady.port], { passiveHealth })],
      );
      // Waits past the end of the ejection; a timer left running would log the removed target.
      await sleep(600);

      assert.equal(
        proxy.logs.some((line) => line.msg === 'target restored'),
        false,
      );
    } finally {
      await proxy.close();
      await failing.close();
      await steady.close();
    }
  });

  it('retries an idempotent request on another target', async () => {
    const steady = await named('steady');
    const refused = await startHttpServer(() => {});
    const refusedPort = refused.port;
    await refused.close();
    const proxy = await startProxy();
    try {
      proxy.publish(
        [
          { name: 'retried', path: '/retried', upstream: 'pair', retries: 1 },
          { name: 'single', path: '/single', upstream: 'pair' },
        ],
        [upstreamOf('pair', [refusedPort, steady.port])],
      );
      const gets: number[] = [];
      for (let i = 0; i < 4; i++) {
        gets.push((await send(proxy.port, '/retried')).status);
      }
      const posts: number[] = [];
      for (let i = 0; i < 4; i++) {
        posts.push((await send(proxy.port, '/retried', { method: 'POST', body: 'x' })).status);
      }
      const unretried: number[] = [];
      for (let i = 0; i < 4; i++) {
        unretried.push((await send(proxy.port, '/single')).status);
      }

      assert.deepEqual(gets, [200, 200, 200, 200]);
      assert.ok(posts.includes(502), `POST statuses ${posts.join(',')}`);
      assert.ok(unretried.includes(502), `statuses without retries ${unretried.join(',')}`);
    } finally {
      await proxy.close();
      await steady.close();
    }
  });

  it('does not retry after a 103', async () => {
    // The first target sends 103 Early Hints and then resets the connection.
    const hinting = await startHttpServer((req, res) => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload' });
      setTimeout(() => req.socket.destroy(), 20);
    });
    const steady = await named('steady');
    const proxy = await startProxy();
    try {
      proxy.publish(
        [{ name: 'retried', path: '/retried', upstream: 'pair', retries: 1 }],
        [upstreamOf('pair', [hinting.port, steady.port])],
      );

      const response = await send(proxy.port, '/retried');

      assert.equal(response.status, 502);
      assert.equal(steady.hits, 0);
    } finally {
      await proxy.close();
      await steady.close();
      await hinting.close();
    }
  });

  it('retries on targets not tried yet', async () => {
    // Two targets pass health checks but reset every request, and the only target that responds
    // fails its health checks. With `retries: 2`, the third attempt must go to the one target
    // that the request has not tried, whatever the balancer.
    const resetting = () =>
      startHttpServer((req, res) => {
        if (req.url === '/healthz') {
          res.end('ok');
        } else {
          req.socket.destroy();
        }
      });
    const first = await resetting();
    const second = await resetting();
    const unhealthy = await startHttpServer((req, res) => {
      res.statusCode = req.url === '/healthz' ? 503 : 200;
      res.end('unhealthy');
    });
    const kinds = ['round-robin', 'least-request', 'hash'] as const;
    const proxy = await startProxy();
    try {
      proxy.publish(
        kinds.map((kind) => ({ name: kind, path: `/${kind}`, upstream: kind, retries: 2 })),
        kinds.map((kind) => ({
          ...checkedUpstream([first.port, second.port, unhealthy.port], 500),
          name: kind,
          balancer: kind,
          hashOn: kind === 'hash' ? 'header:x-user' : undefined,
        })),
      );
      const marked = () => proxy.logs.filter((line) => line.msg === 'target unhealthy').length;
      assert.ok(await eventually(() => marked() >= kinds.length), `unhealthy marks ${marked()}`);

      for (const kind of kinds) {
        const statuses: number[] = [];
        for (let i = 0; i < 4; i++) {
          const headers = { 'x-user': `user-${i}` };
          statuses.push((await send(proxy.port, `/${kind}`, { headers })).status);
        }
        assert.deepEqual(statuses, [200, 200, 200, 200], `${kind} statuses`);
      }
    } finally {
      await proxy.close();
      await first.close();
      await second.close();
      await unhealthy.close();
    }
  });

  it('applies per-route response timeouts', async () => {
    const slow = await startHttpServer((req, res) => {
      if (req.url === '/slow-body') {
        res.writeHead(200);
        res.write('start');
        return;
      }
      // Never answers /slow-head.
    });
    const proxy = await startProxy();
    try {
      proxy.publish(
        [
          {
            name: 'head',
            path: '/slow-head',
            upstream: 'slow',
            timeouts: { connectMs: 0, responseHeaderMs: 200, idleBodyMs: 0 },
          },
          {
            name: 'body',
            path: '/slow-body',
            upstream: 'slow',
            timeouts: { connectMs: 0, responseHeaderMs: 0, idleBodyMs: 200 },
          },
        ],
        [upstreamOf('slow', [slow.port])],
      );

      const head = await send(proxy.port, '/slow-head');
      const body = send(proxy.port, '/slow-body').then(
        () => 'complete',
        (err: Error) => err.message,
      );

      assert.equal(head.status, 504);
      assert.notEqual(await within(body, 'the cut body'), 'complete');

      // A request with Expect: 100-continue takes another path through the proxy.
      const upload = httpRequest({
        host: '127.0.0.1',
        port: proxy.port,
        path: '/slow-head',
        method: 'POST',
        headers: { expect: '100-continue', 'content-length': '2' },
        agent: false,
      });
      upload.on('continue', () => upload.end('hi'));
      upload.flushHeaders();
      const [response] = (await within(once(upload, 'response'), 'the 100-continue answer')) as [
        IncomingMessage,
      ];
      response.resume();
      assert.equal(response.statusCode, 504);
    } finally {
      await proxy.close();
      await slow.close();
    }
  });

  it('retries after a route connect timeout', async () => {
    // An https target whose server accepts TCP and never completes the TLS handshake, so only
    // the route's connect timeout ends the wait for a connection.
    const handshakes = new Set<Socket>();
    const silent = createNetServer((socket) => {
      handshakes.add(socket);
      socket.on('error', () => {});
    });
    const silentPort = await listenNet(silent);
    const steady = await named('steady');
    const proxy = await startProxy({ connectTimeout: 1_000 });
    try {
      const table = proxy.publish(
        [
          {
            name: 'retried',
            path: '/*',
            upstream: 'pair',
            retries: 1,
            timeouts: { connectMs: 200, responseHeaderMs: 0, idleBodyMs: 0 },
          },
        ],
        [
          {
            name: 'pair',
            targets: [
              { url: `https://127.0.0.1:${silentPort}`, weight: 1 },
              { url: `http://127.0.0.1:${steady.port}`, weight: 1 },
            ],
            tls: { caFile: '', serverName: '', insecureSkipVerify: true },
          },
        ],
      );
      const match = table.router.find('GET', undefined, '/');
      assert.equal(match.kind, 'found');
      const [hanging, answering] = match.value.balancer?.targets ?? [];

      // Round robin sends each request to the hanging target first.
      const first = await send(proxy.port, '/a');
      const second = await send(proxy.port, '/b');
      const post = await send(proxy.port, '/c', { method: 'POST', body: 'x' });

      assert.equal(first.status, 200);
      assert.equal(first.body.toString(), 'steady');
      assert.equal(second.status, 200);
      assert.equal(post.status, 504);
      assert.ok(
        await eventually(() => hanging.state.active === 0, 3_000),
        `requests in flight to the hanging target: ${hanging.state.active}`,
      );
      assert.equal(answering.state.active, 0);
    } finally {
      await proxy.close();
      await steady.close();
      for (const socket of handshakes) socket.destroy();
      silent.close();
    }
  });
});

/** Writes a self-signed key and certificate for `upstream.test` into `dir`. */
function writeSelfSigned(dir: string): { key: string; cert: string } {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=upstream.test',
      '-addext',
      'subjectAltName=DNS:upstream.test',
    ],
    { stdio: 'ignore' },
  );
  return { key, cert };
}

describe('proxy https upstreams', () => {
  it('verifies a self-signed certificate with a CA file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-tls-'));
    const { key, cert } = writeSelfSigned(dir);
    const server = createHttpsServer(
      { key: readFileSync(key), cert: readFileSync(cert) },
      (req, res) =>
        res.end(`tls ${req.headers.host} ${(req.socket as { servername?: string }).servername}`),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const wrongCa = join(dir, 'wrong.pem');
    writeFileSync(wrongCa, readFileSync(cert, 'utf8').replace(/MII[A-Za-z0-9]/, 'MIIA'));
    const proxy = await startProxy();
    try {
      const tlsUpstream = (name: string, tls: Upstream['tls']): Upstream => ({
        name,
        targets: [{ url: `https://127.0.0.1:${port}`, weight: 1 }],
        tls,
      });
      proxy.publish(
        [
          { name: 'trusted', path: '/trusted', upstream: 'trusted' },
          { name: 'untrusted', path: '/untrusted', upstream: 'untrusted' },
          { name: 'skipped', path: '/skipped', upstream: 'skipped' },
        ],
        [
          tlsUpstream('trusted', {
            caFile: cert,
            serverName: 'upstream.test',
            insecureSkipVerify: false,
          }),
          tlsUpstream('untrusted', {
            caFile: '',
            serverName: 'upstream.test',
            insecureSkipVerify: false,
          }),
          tlsUpstream('skipped', { caFile: '', serverName: '', insecureSkipVerify: true }),
        ],
      );

      const trusted = await send(proxy.port, '/trusted', { headers: { host: 'api.test' } });
      const untrusted = await send(proxy.port, '/untrusted');
      const skipped = await send(proxy.port, '/skipped');

      assert.equal(
        trusted.status,
        200,
        JSON.stringify(proxy.logs.filter((l) => l.level >= 40).map((l) => l.err ?? l.error)),
      );
      assert.equal(trusted.body.toString(), 'tls api.test upstream.test');
      assert.equal(untrusted.status, 502);
      assert.equal(skipped.status, 200);
    } finally {
      await proxy.close();
      server.closeAllConnections();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sends tls.serverName as the Host of health checks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-tls-'));
    const { key, cert } = writeSelfSigned(dir);
    const checkHosts: string[] = [];
    const server = createHttpsServer(
      { key: readFileSync(key), cert: readFileSync(cert) },
      (req, res) => {
        if (req.url === '/healthz') checkHosts.push(req.headers.host ?? '');
        res.end();
      },
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const proxy = await startProxy();
    try {
      proxy.publish(
        [{ name: 'named', path: '/named', upstream: 'named' }],
        [
          {
            ...checkedUpstream([port], 1_000),
            name: 'named',
            targets: [{ url: `https://127.0.0.1:${port}`, weight: 1 }],
            tls: { caFile: cert, serverName: 'upstream.test', insecureSkipVerify: false },
          },
        ],
      );

      assert.ok(await eventually(() => checkHosts.length >= 2), 'no health check arrived');
      assert.deepEqual(new Set(checkHosts), new Set(['upstream.test']));
      assert.equal(
        proxy.logs.some((line) => line.msg === 'target unhealthy'),
        false,
      );
    } finally {
      await proxy.close();
      server.closeAllConnections();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Publishes `checked` with one target, whose health check sets `host` when given, and returns
 * the Host headers of the first checks that the target received.
 */
async function checkHostsOf(host: string | undefined): Promise<{ hosts: string[]; port: number }> {
  const hosts: string[] = [];
  const server = await startHttpServer((req, res) => {
    if (req.url === '/healthz') hosts.push(req.headers.host ?? '');
    res.end();
  });
  const proxy = await startProxy();
  try {
    const upstream = checkedUpstream([server.port], 1_000);
    if (host !== undefined) upstream.healthCheck = { ...upstream.healthCheck!, host };
    proxy.publish([{ name: 'checked', path: '/checked', upstream: 'checked' }], [upstream]);
    assert.ok(await eventually(() => hosts.length >= 2), 'no health check arrived');
    return { hosts, port: server.port };
  } finally {
    await proxy.close();
    await server.close();
  }
}

describe('health check host', () => {
  it('sends healthCheck.host as the Host', async () => {
    const { hosts } = await checkHostsOf('api.internal');

    assert.deepEqual(new Set(hosts), new Set(['api.internal']));
  });

  it('sends the target host and port without either setting', async () => {
    const { hosts, port } = await checkHostsOf(undefined);

    assert.deepEqual(new Set(hosts), new Set([`127.0.0.1:${port}`]));
  });
});
