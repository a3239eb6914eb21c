import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { RouteNames } from '../../data-plane/route-names.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';

function route(name: string): Route {
  return { name, hosts: [], paths: [`/${name}`], methods: [], upstream: 'u' };
}

const duplicate = { code: 'LOOM_SNAPSHOT_REJECTED', message: /duplicate route name/ };

describe('RouteNames', () => {
  test('rejects duplicates in a full set', () => {
    assert.throws(() => RouteNames.of([route('a'), route('b'), route('a')]), duplicate);
  });

  test('names lowest duplicate either way', () => {
    const routes = Array.from({ length: 100 }, (_, index) => route(`r${index}`));
    const full = [...routes, route('r37'), route('r36')];
    const lowest = { code: 'LOOM_SNAPSHOT_REJECTED', message: /^route "r36": duplicate/ };
    assert.throws(() => RouteNames.of(full), lowest);
    const added = [{ route: route('r37') }, { route: route('r36') }];
    assert.throws(() => RouteNames.of(routes).update(full, [], added), lowest);
  });

  test('rejects an added name a kept route has', () => {
    const routes = Array.from({ length: 100 }, (_, index) => route(`r${index}`));
    const names = RouteNames.of(routes);
    const added = { route: route('r5') };
    assert.throws(() => names.update([...routes, added.route], [], [added]), duplicate);
  });

  test('rejects two added routes of one name', () => {
    const routes = Array.from({ length: 100 }, (_, index) => route(`r${index}`));
    const names = RouteNames.of(routes);
    const added = [{ route: route('new') }, { route: route('new') }];
    assert.throws(
      () => names.update([...routes, route('new'), route('new')], [], added),
      duplicate,
    );
  });

  test('accepts a removed name added again', () => {
    const routes = Array.from({ length: 100 }, (_, index) => route(`r${index}`));
    let names = RouteNames.of(routes);
    // More updates than the layer limit, so a flat set is built again on the way.
    for (let round = 0; round < 40; round++) {
      const old = routes[round % 100];
      const changed = { ...route(old.name), paths: [`/changed/${round}`] };
      routes[round % 100] = changed;
      names = names.update(routes, [{ route: old }], [{ route: changed }]);
    }
    assert.equal(names.has('r0'), true);
    assert.equal(names.has('r99'), true);
    assert.equal(names.has('absent'), false);
  });

  test('forgets a removed name', () => {
    const routes = Array.from({ length: 100 }, (_, index) => route(`r${index}`));
    const names = RouteNames.of(routes);
    const removed = routes.pop() as Route;
    const next = names.update(routes, [{ route: removed }], []);
    assert.equal(next.has('r99'), false);
    const again = next.update([...routes, route('r99')], [], [{ route: route('r99') }]);
    assert.equal(again.has('r99'), true);
  });
});
