import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import fc from 'fast-check';

import { LoomError } from '../../common/errors.js';
import { MAX_PATH_LENGTH } from '../../data-plane/router/path.js';
import { PathTree } from '../../data-plane/router/path-tree.js';
import { parsePattern } from '../../data-plane/router/pattern.js';
import { createRouteEntry, SearchState } from '../../data-plane/router/route-entry.js';
import { buildRouter } from '../../data-plane/router/router.js';
import {
  CROWDED_ALPHABET,
  orders,
  patternArbitrary,
  referenceConflict,
  referenceFind,
  requestArbitrary,
  requestPathArbitrary,
  routeSetArbitrary,
  SMALL_ALPHABET,
  toOutcome,
  tryBuild,
  WIDE_ALPHABET,
  withoutConflicts,
  type Route,
} from './router-reference.js';

/** Checks every request against the reference, with the routes built in three orders. */
function assertLookupsAgree(
  statics: string[],
  routeCount: [number, number],
  numRuns: number,
): void {
  fc.assert(
    fc.property(
      routeSetArbitrary(statics, ...routeCount),
      fc.array(requestArbitrary(statics), { minLength: 20, maxLength: 40 }),
      fc.integer(),
      (generated, requests, seed) => {
        const routes = withoutConflicts(generated);
        const routers = orders(routes, seed).map((ordered) => buildRouter(ordered));
        for (const request of requests) {
          const expected = referenceFind(routes, request);
          for (const router of routers) {
            const actual = toOutcome(router.find(request.method, request.host, request.path));
            assert.deepEqual(actual, expected, JSON.stringify({ request, routes }));
          }
        }
      },
    ),
    { numRuns },
  );
}

describe('router properties', () => {
  test('lookups agree with reference matcher', () => {
    assertLookupsAgree(SMALL_ALPHABET, [1, 8], 1500);
  });

  test('lookups agree on wide nodes', () => {
    assertLookupsAgree(WIDE_ALPHABET, [20, 40], 200);
  });

  test('lookups agree on crowded nodes', () => {
    assertLookupsAgree(CROWDED_ALPHABET, [20, 40], 200);
  });

  test('build conflicts agree with reference', () => {
    fc.assert(
      fc.property(routeSetArbitrary(SMALL_ALPHABET, 1, 8), fc.integer(), (routes, seed) => {
        const conflict = referenceConflict(routes);
        for (const ordered of orders(routes, seed)) {
          const result = tryBuild(ordered);
          const context = JSON.stringify({ conflict, routes: ordered });
          if (conflict === null) {
            assert.ok(!(result instanceof LoomError), `${String(result)} ${context}`);
          } else {
            assert.ok(result instanceof LoomError, context);
            assert.match(result.message, /conflicts with/);
          }
        }
      }),
      { numRuns: 1500 },
    );
  });

  test('static shortcut agrees with tree walk', () => {
    const methodsArbitrary = fc.oneof(fc.constant([]), fc.subarray(['GET', 'POST']));
    fc.assert(
      fc.property(
        fc.array(fc.tuple(patternArbitrary(SMALL_ALPHABET), methodsArbitrary), {
          minLength: 1,
          maxLength: 10,
        }),
        fc.array(
          fc.tuple(fc.constantFrom('GET', 'POST', 'PUT'), requestPathArbitrary(SMALL_ALPHABET)),
        ),
        (entries, requests) => {
          const tree = new PathTree<number>('any host');
          entries.forEach(([source, methods], index) => {
            const pattern = parsePattern(`r${index}`, source);
            try {
              const names = pattern.names;
              const entry = createRouteEntry(`r${index}`, index, pattern, names);
              const parent = createRouteEntry(`r${index}`, index, pattern, names, true);
              tree.insert(pattern, methods, entry, parent);
            } catch (error) {
              assert.ok(error instanceof LoomError, String(error));
            }
          });
          tree.seal();

          const state = new SearchState();
          for (const [method, path] of requests) {
            assert.equal(tree.find(method, path, state), tree.search(method, path, state));
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('arbitrary requests never throw', () => {
    const router = buildRouter<string>([
      {
        name: 'exact',
        hosts: ['api.example.com'],
        paths: ['/a/:b/c'],
        methods: ['GET'],
        value: '',
      },
      { name: 'wild', hosts: ['*.example.com'], paths: ['/*rest'], methods: ['POST'], value: '' },
      { name: 'deep', hosts: [], paths: ['/:a/:b/:c/:d/:e/:f', '/a/*'], methods: [], value: '' },
      { name: 'mixed', hosts: [], paths: ['/m/:a.:b-:c', '/v:v/**'], methods: [], value: '' },
      { name: 'static', hosts: [], paths: ['/', '/a/b/c', '/%2F'], methods: ['GET'], value: '' },
    ]);
    const text = fc.string({ unit: 'binary', maxLength: 300 });
    const pathLike = fc
      .array(
        fc.oneof(
          text,
          fc.constantFrom('/', '%', '%2', '%e9', '.', '..', ':', '*', '-', ';', '\\', 'm/', 'v'),
        ),
      )
      .map((parts) => parts.join(''));
    fc.assert(
      fc.property(
        fc.oneof(text, fc.constantFrom('GET', 'POST')),
        fc.option(fc.oneof(text, fc.constantFrom('api.example.com', 'x.example.com:1'))),
        fc.oneof(
          text,
          pathLike,
          pathLike.map((path) => '/' + path),
        ),
        (method, host, path) => {
          const match = router.find(method, host ?? undefined, path);
          assert.ok(
            ['found', 'method-not-allowed', 'not-found', 'bad-request'].includes(match.kind),
          );
        },
      ),
      { numRuns: 5000 },
    );
  });

  test('long paths return results', () => {
    const routes: Route[] = [];
    for (let depth = 1; depth <= 12; depth++) {
      const params = Array.from({ length: depth }, (_, i) => `:p${i}`);
      routes.push({
        name: `params${depth}`,
        hosts: [],
        paths: ['/' + params.join('/') + '/z'],
        methods: ['GET'],
        value: '',
      });
      routes.push({
        name: `static${depth}`,
        hosts: [],
        paths: ['/a'.repeat(depth) + '/y'],
        methods: ['POST'],
        value: '',
      });
    }
    const router = buildRouter(routes);
    const paths = [
      '/a'.repeat(MAX_PATH_LENGTH / 2),
      '/' + 'a'.repeat(MAX_PATH_LENGTH - 1),
      '/'.repeat(MAX_PATH_LENGTH),
      '/%2e'.repeat(MAX_PATH_LENGTH / 4 - 1) + '/',
      '/a/..'.repeat(MAX_PATH_LENGTH / 5),
      '/%61'.repeat(MAX_PATH_LENGTH / 4),
      '/a'.repeat(12) + '/y',
    ];
    // The work per lookup is bounded by nodes times path length (see PathTree);
    // the benchmark, not this test, measures how long that takes.
    const kinds = paths.map((path) => router.find('GET', undefined, path).kind);
    assert.deepEqual(kinds, [...paths.slice(0, -1).map(() => 'not-found'), 'method-not-allowed']);
  });
});
