import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  WeightedRoundRobinBalancer,
  type Balancer,
  type UpstreamTarget,
} from '../../data-plane/upstreams/balancer.js';
import { HashBalancer } from '../../data-plane/upstreams/hash-balancer.js';
import { LeastRequestBalancer } from '../../data-plane/upstreams/least-request-balancer.js';
import { parseTargetUrl } from '../../data-plane/upstreams/target-url.js';
import { fakeTarget } from './harness.js';

function pickNames(balancer: WeightedRoundRobinBalancer, count: number): string[] {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    names.push(new URL(balancer.pick()?.url ?? 'http://none.test').hostname.split('.')[0]);
  }
  return names;
}

describe('WeightedRoundRobinBalancer', () => {
  it('spreads picks like nginx smooth round-robin', () => {
    const balancer = new WeightedRoundRobinBalancer('api', [
      fakeTarget('a', 5),
      fakeTarget('b', 1),
      fakeTarget('c', 1),
    ]);

    assert.deepEqual(pickNames(balancer, 7), ['a', 'a', 'b', 'a', 'c', 'a', 'a']);
    assert.deepEqual(pickNames(balancer, 7), ['a', 'a', 'b', 'a', 'c', 'a', 'a']);
  });

  it('picks each target weight times per cycle', () => {
    const weights = { a: 3, b: 7, c: 2, d: 1 };
    const balancer = new WeightedRoundRobinBalancer(
      'api',
      Object.entries(weights).map(([name, weight]) => fakeTarget(name, weight)),
    );
    const cycles = 50;
    const counts = new Map<string, number>();

    for (const name of pickNames(balancer, 13 * cycles)) {
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }

    for (const [name, weight] of Object.entries(weights)) {
      assert.equal(counts.get(name), weight * cycles, `picks of ${name}`);
    }
  });

  it('continues the cycle of the balancer it replaces', () => {
    const targets = [fakeTarget('a', 5), fakeTarget('b', 1), fakeTarget('c', 1)];
    const previous = new WeightedRoundRobinBalancer('api', targets);
    const picked = pickNames(previous, 3);
    const next = new WeightedRoundRobinBalancer('api', targets, previous);

    picked.push(...pickNames(next, 4));

    assert.deepEqual(picked, ['a', 'a', 'b', 'a', 'c', 'a', 'a']);
  });

  it('keeps weights after a target is added', () => {
    const previous = new WeightedRoundRobinBalancer('api', [fakeTarget('a', 2), fakeTarget('b')]);
    pickNames(previous, 2);
    const next = new WeightedRoundRobinBalancer(
      'api',
      [fakeTarget('a', 2), fakeTarget('b'), fakeTarget('c', 3)],
      previous,
    );
    const counts = new Map<string, number>();

    for (const name of pickNames(next, 6 * 20)) {
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }

    assert.equal(counts.get('a'), 40);
    assert.equal(counts.get('b'), 20);
    assert.equal(counts.get('c'), 60);
  });

  it('never picks a target of weight 0', () => {
    const balancer = new WeightedRoundRobinBalancer('api', [
      fakeTarget('a', 0),
      fakeTarget('b', 2),
      fakeTarget('c', 0),
      fakeTarget('d', 1),
    ]);

    const names = pickNames(balancer, 300);

    assert.ok(!names.includes('a'));
    assert.ok(!names.includes('c'));
    assert.deepEqual(
      balancer.targets.map((t) => t.url),
      ['http://b.test', 'http://d.test'],
    );
  });

  it('returns undefined when every weight is 0', () => {
    const balancer = new WeightedRoundRobinBalancer('api', [fakeTarget('a', 0)]);

    assert.equal(balancer.pick(), undefined);
    assert.equal(new WeightedRoundRobinBalancer('empty', []).pick(), undefined);
  });

  it('always returns a single target', () => {
    const only = fakeTarget('a', 4);
    const balancer = new WeightedRoundRobinBalancer('api', [only]);

    for (let i = 0; i < 5; i++) {
      assert.equal(balancer.pick(), only);
    }
    assert.equal(balancer.upstream, 'api');
  });
});

describe('parseTargetUrl', () => {
  it('keeps at most one trailing slash of the base path', () => {
    const cases: Array<[string, string, string]> = [
      ['http://10.0.0.5:8080', 'http://10.0.0.5:8080', ''],
      ['http://10.0.0.5:8080/', 'http://10.0.0.5:8080', ''],
      ['https://api.test/v1', 'https://api.test', '/v1'],
      ['https://api.test:443/v1/', 'https://api.test', '/v1/'],
      ['http://api.test/v1//', 'http://api.test', '/v1/'],
      ['http://api.test/a/b%20c/', 'http://api.test', '/a/b%20c/'],
      ['HTTP://API.test:80/x', 'http://api.test', '/x'],
    ];

    for (const [url, origin, basePath] of cases) {
      const parsed = parseTargetUrl(url);
      assert.ok(typeof parsed !== 'string', url);
      assert.deepEqual(
        { origin: parsed.origin, basePath: parsed.basePath },
        { origin, basePath },
        url,
      );
    }
  });

  it('rejects URLs the proxy cannot honour', () => {
    const cases: Array<[string, RegExp]> = [
      ['not a url', /invalid URL/],
      ['ftp://files.test', /unsupported scheme "ftp", expected http or https/],
      ['unix:/run/app.sock', /unsupported scheme "unix"/],
      ['http://user:secret@api.test', /credentials/],
      ['http://api.test/v1?x=1', /query/],
      ['http://api.test/v1?', /query/],
      ['http://api.test/v1#top', /fragment/],
      [`http://api.test/${'a'.repeat(2_100)}`, /too long: 2116 characters, at most 2048/],
      ['http://api.test:0', /port 0 cannot be connected to/],
      [
        `http://${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.test`,
        /host name has 260 characters, at most 253/,
      ],
      ['http://api.test//internal/x', /cannot start with "\/\/"/],
    ];

    for (const [url, expected] of cases) {
      const result = parseTargetUrl(url);
      assert.equal(typeof result, 'string', url);
      assert.match(result as string, expected, url);
    }
  });
});

describe('retry picks', () => {
  const kinds: [string, (targets: UpstreamTarget[]) => Balancer][] = [
    ['round-robin', (targets) => new WeightedRoundRobinBalancer('api', targets)],
    ['least-request', (targets) => new LeastRequestBalancer('api', targets)],
    ['hash', (targets) => new HashBalancer('api', targets, () => 'user-1')],
  ];

  for (const [kind, create] of kinds) {
    it(`${kind} prefers an untried target`, () => {
      const [a, b, c] = [fakeTarget('a'), fakeTarget('b'), fakeTarget('c')];
      c.state.setHealthy(false, 'test');
      const balancer = create([a, b, c]);

      for (let i = 0; i < 20; i++) {
        assert.equal(balancer.pick(undefined, [a, b]), c, 'untried but unavailable c');
        assert.equal(balancer.pick(undefined, [b, a]), c, 'untried c, other order');
      }
    });

    it(`${kind} reuses a tried target last`, () => {
      const [a, b, c] = [fakeTarget('a'), fakeTarget('b'), fakeTarget('c')];
      c.state.setHealthy(false, 'test');
      const balancer = create([a, b, c]);

      for (let i = 0; i < 20; i++) {
        const picked = balancer.pick(undefined, [a, b, c]);
        assert.ok(picked === a || picked === b, `picked ${picked?.url} over available ones`);
      }
    });
  }
});
