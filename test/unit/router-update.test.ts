import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import fc from 'fast-check';

import { buildRouter, updateRouter, updateRouterAsync } from '../../data-plane/router/router.js';
import type { Router } from '../../data-plane/router/types.js';
import {
  CROWDED_ALPHABET,
  referenceConflict,
  referenceFind,
  requestArbitrary,
  routeSetArbitrary,
  SMALL_ALPHABET,
  toOutcome,
  WIDE_ALPHABET,
  withoutConflicts,
  type Request,
  type Route,
} from './router-reference.js';

/** One change of a route set: the routes removed from it and the routes added to it. */
interface Change {
  removed: Route[];
  added: Route[];
  result: Route[];
}

type Fate = 'keep' | 'remove' | 'replace';

/**
 * Applies fates to `routes`: a replaced route keeps its name and takes the spec of the next
 * route of `others`, and the others left over are added under new names.
 */
function changeOf(routes: Route[], fates: Fate[], others: Route[], tag: string): Change {
  const removed: Route[] = [];
  const added: Route[] = [];
  const result: Route[] = [];
  let next = 0;
  routes.forEach((route, i) => {
    const fate = fates[i % fates.length] ?? 'keep';
    if (fate === 'keep' || (fate === 'replace' && next >= others.length)) {
      result.push(route);
      return;
    }
    removed.push(route);
    if (fate === 'replace') {
      const replacement = { ...others[next++], name: route.name, value: route.name };
      added.push(replacement);
      result.push(replacement);
    }
  });
  for (const other of others.slice(next)) {
    const name = `${tag}-${other.name}`;
    const route = { ...other, name, value: name };
    added.push(route);
    result.push(route);
  }
  return { removed, added, result };
}

function assertMatches(router: Router<string>, routes: Route[], requests: Request[]): void {
  for (const request of requests) {
    const expected = referenceFind(routes, request);
    const actual = toOutcome(router.find(request.method, request.host, request.path));
    assert.deepEqual(actual, expected, JSON.stringify({ request, routes }));
  }
}

const fateArbitrary = fc.array(fc.constantFrom<Fate>('keep', 'keep', 'remove', 'replace'), {
  minLength: 1,
  maxLength: 12,
});

/**
 * Checks that a router updated by chained changes matches as the reference does for the
 * resulting set, and that the router each change started from still matches its own set.
 */
function assertUpdatesAgree(
  statics: string[],
  routeCount: [number, number],
  numRuns: number,
): void {
  fc.assert(
    fc.property(
      routeSetArbitrary(statics, ...routeCount),
      fc.array(fc.tuple(fateArbitrary, routeSetArbitrary(statics, 0, 4)), {
        minLength: 1,
        maxLength: 3,
      }),
      fc.array(requestArbitrary(statics), { minLength: 20, maxLength: 40 }),
      (generated, steps, requests) => {
        let routes = withoutConflicts(generated);
        let router = buildRouter(routes);
        steps.forEach(([fates, others], step) => {
          const change = changeOf(routes, fates, others, `s${step}`);
          const updated = updateRouter(router, change.removed, change.added);
          const context = JSON.stringify({ routes, change });
          if (referenceConflict(change.result) !== null) {
            assert.equal(updated, null, context);
            return;
          }
          assert.ok(updated !== null, context);
          assert.equal(updated.size, change.result.length);
          assertMatches(updated, change.result, requests);
          assertMatches(router, routes, requests);
          routes = change.result;
          router = updated;
        });
      },
    ),
    { numRuns },
  );
}

const route = (name: string, paths: string[], methods: string[] = [], hosts: string[] = []) => ({
  name,
  value: name,
  hosts,
  paths,
  methods,
});

describe('router updates', () => {
  test('updates agree with reference matcher', () => {
    assertUpdatesAgree(SMALL_ALPHABET, [1, 8], 1000);
  });

  test('updates agree on wide nodes', () => {
    assertUpdatesAgree(WIDE_ALPHABET, [20, 40], 150);
  });

  test('updates agree on crowded nodes', () => {
    assertUpdatesAgree(CROWDED_ALPHABET, [20, 40], 150);
  });

  test('two updates of one router stay apart', () => {
    const base = buildRouter([route('a', ['/x/y/z']), route('b', ['/x/:p'])]);
    const first = updateRouter(base, [], [route('c', ['/x/y/w'])]);
    const second = updateRouter(base, [route('b', ['/x/:p'])], [route('d', ['/x/y'])]);
    assert.ok(first !== null);
    assert.ok(second !== null);

    assert.equal(base.find('GET', undefined, '/x/y/w').kind, 'not-found');
    assert.equal(second.find('GET', undefined, '/x/y/w').kind, 'not-found');
    const added = first.find('GET', undefined, '/x/y/w');
    assert.equal(added.kind === 'found' ? added.route : added.kind, 'c');
    assert.equal(first.find('GET', undefined, '/x/q').kind, 'found');
    assert.equal(second.find('GET', undefined, '/x/q').kind, 'not-found');
    assert.equal(second.find('GET', undefined, '/x/y').kind, 'found');
    assert.equal(base.find('GET', undefined, '/x/y').kind, 'found');
    assert.equal((base.find('GET', undefined, '/x/y') as { route: string }).route, 'b');
  });

  test('removed static route answers 404', () => {
    const base = buildRouter([route('a', ['/a'], ['GET']), route('b', ['/b'], ['GET'])]);
    const updated = updateRouter(base, [route('a', ['/a'], ['GET'])], []);
    assert.ok(updated !== null);
    assert.deepEqual(updated.find('GET', undefined, '/a'), { kind: 'not-found' });
    assert.deepEqual(updated.find('POST', undefined, '/a'), { kind: 'not-found' });
    assert.equal(updated.find('GET', undefined, '/b').kind, 'found');
    assert.equal(base.find('GET', undefined, '/a').kind, 'found');
  });

  test('added static paths of new lengths match', () => {
    const base = buildRouter([route('a', ['/a'], ['GET']), route('p', ['/:x/:y'], ['GET'])]);
    // 254 and 255 characters sit on both sides of the length shared by all longer paths.
    const paths = ['/bb', '/' + 'c'.repeat(253), '/' + 'd'.repeat(254), '/' + 'e'.repeat(299)];
    const added = paths.map((path, i) => route(`s${i}`, [path], ['GET']));
    const updated = updateRouter(base, [], added);
    assert.ok(updated !== null);
    for (let i = 0; i < paths.length; i++) {
      const match = updated.find('GET', undefined, paths[i]);
      assert.equal(match.kind, 'found', paths[i]);
      assert.equal((match as { route: string }).route, `s${i}`, paths[i]);
      assert.equal(base.find('GET', undefined, paths[i]).kind, 'not-found', paths[i]);
    }
    assert.equal((updated.find('GET', undefined, '/u/v') as { route: string }).route, 'p');
  });

  test('last route of a host removes its tree', () => {
    const base = buildRouter([route('a', ['/a'], [], ['a.com']), route('any', ['/a'])]);
    const updated = updateRouter(base, [route('a', ['/a'], [], ['a.com'])], []);
    assert.ok(updated !== null);
    const match = updated.find('GET', 'a.com', '/a');
    assert.equal(match.kind === 'found' ? match.route : match.kind, 'any');
    const again = updateRouter(updated, [], [route('a', ['/a'], [], ['a.com'])]);
    assert.ok(again !== null);
    const restored = again.find('GET', 'a.com', '/a');
    assert.equal(restored.kind === 'found' ? restored.route : restored.kind, 'a');
  });

  test('many updates fold static changes', () => {
    const routes = Array.from({ length: 50 }, (_, i) => route(`r${i}`, [`/s/${i}`], ['GET']));
    let router = buildRouter(routes);
    let current = routes;
    // More changed static paths than a fork copies before it folds them into a new map.
    for (let round = 0; round < 700; round++) {
      const i = round % current.length;
      const next = route(current[i].name, [`/s/${i}/v${round}`], ['GET']);
      const updated = updateRouter(router, [current[i]], [next]);
      assert.ok(updated !== null);
      current = current.map((item, k) => (k === i ? next : item));
      router = updated;
    }
    for (const [i, item] of current.entries()) {
      const match = router.find('GET', undefined, item.paths[0]);
      assert.equal(match.kind === 'found' ? match.route : match.kind, `r${i}`);
      assert.equal(router.find('GET', undefined, `/s/${i}`).kind, 'not-found');
    }
  });

  test('conflicting update returns null', () => {
    const base = buildRouter([route('a', ['/u/:id'], ['GET'])]);
    assert.equal(updateRouter(base, [], [route('b', ['/u/:name'], ['GET'])]), null);
    assert.equal(base.find('GET', undefined, '/u/1').kind, 'found');
  });

  test('unknown removed route returns null', () => {
    const base = buildRouter([route('a', ['/a'])]);
    assert.equal(updateRouter(base, [route('a', ['/b'])], []), null);
    assert.equal(updateRouter(base, [route('z', ['/a'])], []), null);
  });

  test('foreign router returns null', async () => {
    const foreign: Router<string> = {
      size: 0,
      find: () => ({ kind: 'not-found' }),
      listMethods: () => [],
    };
    assert.equal(await updateRouterAsync(foreign, [], [route('a', ['/a'])]), null);
  });

  test('async update yields between slices', async () => {
    const routes = Array.from({ length: 2000 }, (_, i) => route(`r${i}`, [`/p/${i}/:id`]));
    const base = buildRouter(routes);
    const added = Array.from({ length: 2000 }, (_, i) => route(`n${i}`, [`/n/${i}/:id`]));
    let turns = 0;
    const counter = setInterval(() => turns++, 0);
    try {
      const updated = await updateRouterAsync(base, routes.slice(0, 1000), added, {
        sliceMs: 0.01,
      });
      assert.ok(updated !== null);
      assert.equal(updated.size, 3000);
      assert.equal(updated.find('GET', undefined, '/p/1/x').kind, 'not-found');
      assert.equal(updated.find('GET', undefined, '/p/1500/x').kind, 'found');
      assert.equal(updated.find('GET', undefined, '/n/1999/x').kind, 'found');
    } finally {
      clearInterval(counter);
    }
    assert.ok(turns > 0, 'the update never yielded to the event loop');
  });
});
