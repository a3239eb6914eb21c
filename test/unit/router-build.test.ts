import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import fc from 'fast-check';

import { LoomError } from '../../common/errors.js';
import { PathTree } from '../../data-plane/router/path-tree.js';
import { parsePattern } from '../../data-plane/router/pattern.js';
import { createRouteEntry, SearchState } from '../../data-plane/router/route-entry.js';
import { buildRouter, buildRouterAsync } from '../../data-plane/router/router.js';
import { sortSteps } from '../../data-plane/router/sort-steps.js';
import type { Router, RouterRoute } from '../../data-plane/router/types.js';

/** Returns routes of every kind, with hosts and methods, named out of sorted order. */
function mixedRoutes(count: number): RouterRoute<number>[] {
  const shapes = [
    '/api/s{i}/items',
    '/api/s{i}/items/:id',
    '/api/s{i}/files/:name.json',
    '/api/s{i}/files/:base.:ext',
    '/api/s{i}/v:version/status',
    '/api/s{i}/static/**',
    '/api/s{i}/rest/*path',
  ];
  const routes: RouterRoute<number>[] = [];
  for (let i = 0; i < count; i++) {
    const service = Math.floor(i / shapes.length);
    routes.push({
      // Names out of numeric order, so the build has to sort them.
      name: `route-${(i * 7919) % count}`,
      hosts: i % 3 === 0 ? ['api.example.com'] : [],
      paths: [shapes[i % shapes.length].replace('{i}', String(service))],
      methods: i % 2 === 0 ? ['GET'] : [],
      value: i,
    });
  }
  return routes;
}

const REQUESTS: [string, string | undefined, string][] = [
  ['GET', 'api.example.com', '/api/s3/items'],
  ['HEAD', 'api.example.com', '/api/s3/items'],
  ['POST', undefined, '/api/s3/items/7'],
  ['GET', undefined, '/api/s10/files/report.json'],
  ['GET', undefined, '/api/s10/files/a.b.c'],
  ['GET', 'other.example.com', '/api/s12/v2/status'],
  ['GET', undefined, '/api/s20/static'],
  ['DELETE', undefined, '/api/s20/rest/a/b'],
  ['PUT', 'api.example.com', '/api/s21/items'],
  ['GET', undefined, '/api/s99999/items'],
  ['GET', undefined, '/api/s1/%2e%2e/s2/items'],
];

function lookups(router: Router<number>): unknown[] {
  return REQUESTS.map(([method, host, path]) => router.find(method, host, path));
}

describe('router async build', () => {
  test('matches synchronous build', async () => {
    const routes = mixedRoutes(3000);
    const sync = buildRouter(routes);
    const async = await buildRouterAsync(routes, { sliceMs: 1 });
    assert.equal(async.size, sync.size);
    assert.deepEqual(lookups(async), lookups(sync));
  });

  test('yields to the event loop', async () => {
    let turns = 0;
    let building = true;
    const tick = (): void => {
      turns++;
      if (building) setImmediate(tick);
    };
    setImmediate(tick);
    await buildRouterAsync(mixedRoutes(20_000), { sliceMs: 1 });
    building = false;
    // A build that never yielded would let the chain run once at most.
    assert.ok(turns > 1, `the event loop turned ${turns} times`);
  });

  test('rejects conflicts like sync build', async () => {
    const routes = [
      ...mixedRoutes(500),
      { name: 'dup-a', hosts: [], paths: ['/x/:a'], methods: [], value: -1 },
      { name: 'dup-b', hosts: [], paths: ['/x/:b'], methods: [], value: -2 },
    ];
    let syncMessage = '';
    try {
      buildRouter(routes);
    } catch (error) {
      syncMessage = (error as Error).message;
    }
    assert.match(syncMessage, /route "dup-b" path "\/x\/:b" conflicts with route "dup-a"/);
    await assert.rejects(buildRouterAsync([...routes].reverse()), (error: unknown) => {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_SNAPSHOT_REJECTED');
      assert.equal(error.message, syncMessage);
      return true;
    });
  });

  test('rejects invalid slice length', async () => {
    for (const sliceMs of [0, -1, Number.NaN, Infinity]) {
      await assert.rejects(buildRouterAsync([], { sliceMs }), (error: unknown) => {
        assert.ok(error instanceof LoomError);
        assert.equal(error.code, 'LOOM_INVALID_ARGUMENT');
        assert.match(error.message, /sliceMs must be a positive number/);
        return true;
      });
    }
  });

  test('empty route set builds', async () => {
    const router = await buildRouterAsync<number>([]);
    assert.equal(router.size, 0);
    assert.deepEqual(router.find('GET', undefined, '/'), { kind: 'not-found' });
  });
});

describe('router sort steps', () => {
  test('sorts like a stable native sort', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 50 }), fc.nat()), { maxLength: 9000 }),
        (items) => {
          const compare = (a: [number, number], b: [number, number]) => a[0] - b[0];
          const steps = sortSteps(items, compare);
          let step = steps.next();
          while (step.done !== true) step = steps.next();
          assert.deepEqual(step.value, [...items].sort(compare));
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('router static shortcut', () => {
  test('trailing slashes agree with tree walk', () => {
    const patterns = ['/a', '/b/', '/c/:id', '/c/:id/', '/d/*rest', '/e/**', '/', '/f//g'];
    const tree = new PathTree<string>('any host');
    for (const source of patterns) {
      const pattern = parsePattern(source, source);
      const entry = createRouteEntry(source, source, pattern, pattern.names);
      const parent = createRouteEntry(source, source, pattern, pattern.names, true);
      tree.insert(pattern, [], entry, parent);
    }
    tree.seal();

    const state = new SearchState();
    const paths = ['/a', '/a/', '/a//', '/b', '/b/', '/c/1', '/c/1/', '/c//', '/d', '/d/', '/e'];
    for (const path of [...paths, '/e/', '/e/x', '/', '//', '/f//g', '/f/g']) {
      const fast = tree.find('GET', path, state)?.route ?? null;
      const walked = tree.search('GET', path, state)?.route ?? null;
      assert.equal(fast, walked, path);
    }
    assert.equal(tree.find('GET', '/a/', state), null);
    assert.equal(tree.find('GET', '/b', state), null);
    assert.equal(tree.find('GET', '/e', state)?.route, '/e/**');
  });
});

describe('router pattern size limits', () => {
  /** Returns the error message of parsing `source`, or '' when it parses. */
  function parseError(source: string): string {
    try {
      parsePattern('big', source);
      return '';
    } catch (error) {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_SNAPSHOT_REJECTED');
      return error.message;
    }
  }

  test('pattern of 8192 characters parses', () => {
    assert.equal(parseError('/' + 'a'.repeat(8191)), '');
  });

  test('longer pattern is rejected briefly', () => {
    const message = parseError('/' + 'a'.repeat(100_000));
    assert.match(message, /invalid path pattern starting "\/a{63}" \(100001 characters\)/);
    assert.match(message, /at most 8192 characters are allowed/);
    assert.ok(message.length < 300, message);
  });

  test('pattern of 1024 segments parses', () => {
    assert.equal(parseError('/a'.repeat(1024)), '');
  });

  test('pattern of 1025 segments is rejected', () => {
    const message = parseError('/a'.repeat(1025));
    assert.match(message, /\(2050 characters\): at most 1024 segments are allowed/);
  });
});
