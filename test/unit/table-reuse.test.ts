import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { buildTable } from '../../data-plane/build-table.js';
import { stageTable } from '../../data-plane/workers/staged-table.js';
import type { RoutingTable, RouteBinding } from '../../data-plane/table.js';
import { UpstreamRegistry } from '../../data-plane/upstreams/registry.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

function upstream(url: string): Upstream {
  return { name: 'u', targets: [{ url, weight: 1 }] };
}

function route(name: string, path: string, retries?: number): Route {
  return { name, hosts: [], paths: [path], methods: [], upstream: 'u', retries };
}

function snapshot(version: number, routes: Route[], upstreams: Upstream[]): Snapshot {
  return { epoch: 'e', version, hash: `h${version}`, routes, upstreams };
}

function binding(table: RoutingTable, path: string): RouteBinding {
  const match = table.router.find('GET', undefined, path);
  assert.equal(match.kind, 'found', `${path} not found`);
  return (match as { value: RouteBinding }).value;
}

describe('table reuse', () => {
  test('unchanged routes keep their bindings', async () => {
    const upstreams = new UpstreamRegistry();
    const pool = [upstream('http://127.0.0.1:9')];
    const [a, b] = [route('a', '/a'), route('b', '/b')];
    const first = await buildTable(snapshot(1, [a, b], pool), upstreams);
    const changedB = route('b', '/b', 2);
    const second = await buildTable(snapshot(2, [a, changedB], pool), upstreams, {
      previous: first,
    });

    assert.equal(binding(second, '/a'), binding(first, '/a'));
    assert.notEqual(binding(second, '/b'), binding(first, '/b'));
    assert.equal(binding(second, '/b').actions.retries, 2);
    assert.equal(binding(first, '/b').actions.retries, 0);
    assert.equal(binding(second, '/b').balancer, binding(first, '/a').balancer);
    await upstreams.close();
  });

  test('changed upstream leaves old table intact', async () => {
    const upstreams = new UpstreamRegistry();
    const a = route('a', '/a');
    const first = await buildTable(snapshot(1, [a], [upstream('http://127.0.0.1:9')]), upstreams);
    const oldBinding = binding(first, '/a');
    const oldBalancer = oldBinding.balancer;
    const second = await buildTable(
      snapshot(2, [a], [upstream('http://127.0.0.1:10')]),
      upstreams,
      { previous: first },
    );

    const newBinding = binding(second, '/a');
    assert.notEqual(newBinding, oldBinding);
    assert.notEqual(newBinding.balancer, oldBalancer);
    // Requests that started on the first table keep its balancer.
    assert.equal(binding(first, '/a').balancer, oldBalancer);
    assert.equal(newBinding.actions, oldBinding.actions);
    await upstreams.close();
  });

  test('new route objects are compiled again', async () => {
    const upstreams = new UpstreamRegistry();
    const pool = [upstream('http://127.0.0.1:9')];
    const first = await buildTable(snapshot(1, [route('a', '/a', 1)], pool), upstreams);
    // Equal content in a new object, as from a snapshot cache file: no reuse, same result.
    const second = await buildTable(snapshot(2, [route('a', '/a', 1)], pool), upstreams, {
      previous: first,
    });

    assert.notEqual(binding(second, '/a'), binding(first, '/a'));
    assert.deepEqual(binding(second, '/a').actions, binding(first, '/a').actions);
    await upstreams.close();
  });
  test('route change updates router in place', async () => {
    const upstreams = new UpstreamRegistry();
    const pool = [upstream('http://127.0.0.1:9')];
    const hosted = (name: string, host: string, path: string): Route => ({
      ...route(name, path),
      hosts: [host],
    });
    // Enough routes that a two-route change is small enough to update the router.
    const others = Array.from({ length: 30 }, (_, i) => route(`other-${i}`, `/other/${i}`));
    const routes = [hosted('a', 'a.com', '/a'), hosted('b', 'b.com', '/b'), ...others];
    const first = await buildTable(snapshot(1, routes, pool), upstreams);
    const changedA = hosted('a', 'a.com', '/a2');
    const second = await buildTable(snapshot(2, [changedA, ...routes.slice(1)], pool), upstreams, {
      previous: first,
    });

    // An updated router shares the path trees that the change did not touch.
    const trees = (table: RoutingTable) =>
      (table.router as unknown as { index: { exactHosts: Map<string, unknown> } }).index.exactHosts;
    assert.equal(trees(second).get('b.com'), trees(first).get('b.com'));
    assert.notEqual(trees(second).get('a.com'), trees(first).get('a.com'));
    assert.equal(second.router.find('GET', 'a.com', '/a').kind, 'not-found');
    assert.equal(second.router.find('GET', 'a.com', '/a2').kind, 'found');
    assert.equal(first.router.find('GET', 'a.com', '/a').kind, 'found');
    assert.equal(second.router.size, 32);
    await upstreams.close();
  });

  test('conflicting change is rejected by name', async () => {
    const upstreams = new UpstreamRegistry();
    const pool = [upstream('http://127.0.0.1:9')];
    const names = ['a', 'b', ...Array.from({ length: 30 }, (_, i) => `other-${i}`)];
    const routes = names.map((name) => route(name, `/${name}/:id`));
    const first = await buildTable(snapshot(1, routes, pool), upstreams);
    const bad = route('b', '/a/:name');
    await assert.rejects(
      buildTable(snapshot(2, [routes[0], bad, ...routes.slice(2)], pool), upstreams, {
        previous: first,
      }),
      /route "b" path "\/a\/:name" conflicts with route "a"/,
    );
    assert.equal(first.router.find('GET', undefined, '/b/1').kind, 'found');
    await upstreams.close();
  });
  test('staged table reuses serving table', async () => {
    const upstreams = new UpstreamRegistry();
    const pool = [upstream('http://127.0.0.1:9')];
    const routes = Array.from({ length: 30 }, (_, i) => route(`r${i}`, `/r/${i}`));
    const first = await buildTable(snapshot(1, routes, pool), upstreams);
    const changed = [route('r0', '/r/0/v2'), ...routes.slice(1)];
    const staged = await stageTable(snapshot(2, changed, pool), upstreams, [], first);
    const second = staged.commit();

    assert.equal(binding(second, '/r/1'), binding(first, '/r/1'));
    assert.equal(binding(second, '/r/0/v2').balancer, binding(first, '/r/1').balancer);
    assert.equal(second.router.find('GET', undefined, '/r/0').kind, 'not-found');
    assert.equal(first.router.find('GET', undefined, '/r/0').kind, 'found');
    await upstreams.close();
  });
});
